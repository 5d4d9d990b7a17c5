//! The PCE REST client.
