//! A worker's device workspace in two capacity classes, so a client of any size runs: the
//! small class ([`N`] examples) serves nearly every user; a client with more ratings gets the
//! large class ([`LARGE_N`], the most a device can index), allocated the first time a worker
//! meets such a client and then kept. Both are the same `fedrecon-core` [`Device`], so the
//! bits of a client's round do not depend on the class that ran it.

use anyhow::{Result, anyhow};
use fedrecon_core::{Device, Error as CoreError, Scalar};

use crate::data::partition::Client;

/// Example capacity of the small class: fits every ML-1M user uncapped (max 2,314 ratings).
pub const N: usize = 2400;

/// Example capacity of the large class: the most a device indexes (`u16` example slots).
pub const LARGE_N: usize = u16::MAX as usize;

/// The device that holds the loaded client, borrowed from a [`Workspace`].
pub enum Loaded<'a, S, const K: usize> {
    /// A client of at most [`N`] ratings.
    Small(&'a mut Device<S, N, K>),
    /// A client of more than [`N`] and at most [`LARGE_N`] ratings.
    Large(&'a mut Device<S, LARGE_N, K>),
}

/// Runs `$body` with `$dev` bound to the device of a [`Loaded`], whichever class it is (the
/// body is compiled for both).
#[macro_export]
macro_rules! on_device {
    ($loaded:expr, |$dev:ident| $body:expr) => {
        match $loaded {
            $crate::round::workspace::Loaded::Small($dev) => $body,
            $crate::round::workspace::Loaded::Large($dev) => $body,
        }
    };
}

/// One worker's workspace: a small device always, a large one once needed.
pub struct Workspace<S, const K: usize> {
    small: Box<Device<S, N, K>>,
    large: Option<Box<Device<S, LARGE_N, K>>>,
}

impl<S: Scalar, const K: usize> Workspace<S, K> {
    /// A fresh workspace (call on a thread with a [`super::WORKER_STACK`]-sized stack).
    pub fn new() -> Self {
        Self {
            small: Box::new(Device::new()),
            large: None,
        }
    }

    /// Copies a client's examples into the smallest device that holds them.
    pub fn load(&mut self, client: &Client<'_>, num_items: u32) -> Result<Loaded<'_, S, K>> {
        if client.len() <= N {
            fill(&mut self.small, client, num_items)?;
            Ok(Loaded::Small(&mut self.small))
        } else {
            let large = self.large.get_or_insert_with(large_device);
            fill(large, client, num_items)?;
            Ok(Loaded::Large(large))
        }
    }
}

impl<S: Scalar, const K: usize> Default for Workspace<S, K> {
    fn default() -> Self {
        Self::new()
    }
}

/// A boxed large device, built in a function of its own: the device is built on the stack
/// before it is boxed, and inlined into [`Workspace::load`] its 15 MB frame would be probed
/// page by page on every client's load (measured: a fifth of a round's time).
#[cold]
#[inline(never)]
fn large_device<S: Scalar, const K: usize>() -> Box<Device<S, LARGE_N, K>> {
    Box::new(Device::new())
}

fn fill<S: Scalar, const C: usize, const K: usize>(
    dev: &mut Device<S, C, K>,
    client: &Client<'_>,
    num_items: u32,
) -> Result<()> {
    let data = dev.data_mut();
    data.clear();
    for (&item, &rating) in client.items.iter().zip(client.ratings) {
        data.push(item, S::from_f32(rating), num_items)
            .map_err(|e| match e {
                CoreError::CapacityExceeded { .. } => anyhow!(
                    "user {} has {} ratings, more than the largest device capacity of \
                     {LARGE_N}; set data.max_ratings_per_user",
                    client.user,
                    client.len()
                ),
                e => anyhow!("user {}: {e}", client.user),
            })?;
    }
    Ok(())
}
