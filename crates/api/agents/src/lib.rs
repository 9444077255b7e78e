//! Generated code of the `agynio.api.agents.v1` proto package.
#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
