//! Listeners: TCP accept, TLS termination (rustls), HTTP/1.1 and HTTP/2 connections. The
//! first stage a request meets after the config is loaded.

pub mod guard;
pub mod listener;
pub mod tls;
