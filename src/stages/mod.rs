//! Stage kinds. Each lives in its own folder; the list of kinds is in
//! [`crate::components`].

pub mod alerting;
pub mod bandwidth;
pub mod cooldown;
pub mod dedupe;
pub mod distinct_count;
pub mod episode;
pub mod filter;
pub mod flatline;
pub mod keyed;
pub mod keys;
pub mod metric;
pub mod new_term;
pub mod ratio;
pub mod report;
pub mod script;
pub mod series;
pub mod spike;
pub mod stage_state;
pub mod top_n;
pub mod values;
pub mod window;
pub mod window_count;
