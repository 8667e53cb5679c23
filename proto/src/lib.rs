//! Wire formats shared by boundary and the Coder side: the protobuf messages Coder's agent
//! and coderd exchange, the length-prefixed frame codec of the agent's audit socket, and DRPC.
//!
//! This crate knows nothing of policy, sockets or jails; it turns bytes into messages and back.
