//! Code the example programs share (and test): the HTTP request parser
//! of `httpd`.

pub mod http;
