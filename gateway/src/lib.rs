//! The meshfed gateway: config, routing, the local and federation data planes, DNS, admin.

pub mod config;
