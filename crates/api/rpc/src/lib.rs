//! Generated code of the `google.rpc` error detail messages.
#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
