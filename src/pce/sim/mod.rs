//! The PCE simulator: the real endpoints over HTTP, a deterministic estate from a seed.
