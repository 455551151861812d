//! IPv4 core.
