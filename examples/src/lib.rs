//! Code the example programs share (and test): the HTTP request parser
//! of `httpd`.

#![forbid(unsafe_code)]

pub mod http;
