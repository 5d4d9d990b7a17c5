//! `report`: totals per key over calendar periods (hours, days, ISO weeks, months) in a
//! time zone, reported as alerts when each period is over.

mod config;
mod period;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{ReportAlertConfig, ReportConfig, SumFields};
pub use period::{Calendar, Period, Span, parse_time_zone};
pub use stage::{ReportSpec, ReportStage};
