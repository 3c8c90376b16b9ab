//! Real peers on loopback ports: servers the agent instruments (nginx, Python) and clients
//! that drive them (curl, a raw socket client). Every peer is stopped when dropped.

pub mod curl;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod python;
pub mod raw;
