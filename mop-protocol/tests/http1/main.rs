//! HTTP/1 parser tests on recorded traffic, split every way, cut by the capture window, and
//! broken on purpose.

mod capture;
mod fixtures;
mod splits;
mod support;
