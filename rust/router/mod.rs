//! Cluster load balancers (DESIGN §6). Placeholder: filled in by the routers work.
