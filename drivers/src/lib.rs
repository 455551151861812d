//! strata device backends.
