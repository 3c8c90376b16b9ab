//! Real peers on loopback ports: servers the agent instruments (nginx, Python) and clients
//! that drive them (curl, a raw socket client, load generators). Every peer is stopped when dropped.

pub mod curl;
pub mod flood;
pub mod grpc;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod python;
pub mod raw;
pub mod tls;
