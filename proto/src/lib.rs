//! strata wire formats.
