//! Kubernetes metadata tests.
