//! Leases on the active model: the product's inference and the agent share the slots.
//!
//! The product runs the active model in place, from flash, on its own task, while the
//! agent erases and writes the other slot. After a commit, a rollback or a revert the
//! roles swap, and an inference that started on the old slot may still be reading it.
//! A [`Lease`] pins the slot it was taken on: the agent never erases a slot while a lease
//! on it is held (the erase waits for the next `poll`). Leases are only handed out on the
//! active slot, which the agent never erases, so only a lease taken before a switch can
//! hold an erase back, and it ends with that inference.
//!
//! Lock-free: the product increments the slot's count, then checks the active slot did
//! not change meanwhile (else it lets go and tries again); the agent publishes the new
//! active slot before it checks the old one's count. With sequentially consistent
//! atomics, an erase never starts under a lease taken on that slot. `portable-atomic`
//! gives the same code on parts without compare-and-swap (riscv32imc: enable its
//! `critical-section` feature there).

use portable_atomic::{AtomicU32, Ordering::SeqCst};

/// The lease table, shared by the agent ([`crate::Config::leases`]) and the product's
/// tasks: put it in a `static`.
#[derive(Debug, Default)]
pub struct Leases {
    /// `generation << 2 | (slot + 1)`, or `generation << 2` when no model runs.
    active: AtomicU32,
    held: [AtomicU32; 2],
}

impl Leases {
    /// No model published yet.
    pub const fn new() -> Self {
        Self { active: AtomicU32::new(0), held: [AtomicU32::new(0), AtomicU32::new(0)] }
    }

    /// Pins the active slot for one use of the model (an inference), or `None` while no
    /// model runs. Drop the lease when done.
    pub fn acquire(&self) -> Option<Lease<'_>> {
        loop {
            let active = self.active.load(SeqCst);
            let slot = (active & 3).checked_sub(1)?;
            let held = self.held.get(slot as usize)?;
            held.fetch_add(1, SeqCst);
            if self.active.load(SeqCst) == active {
                return Some(Lease { leases: self, slot: slot as u8, generation: active >> 2 });
            }
            held.fetch_sub(1, SeqCst);
        }
    }

    /// The agent: `slot` is active now (`None`: no model runs). A change of slot starts a
    /// new generation.
    pub(crate) fn publish(&self, slot: Option<u8>) {
        let code = slot.map_or(0, |s| u32::from(s & 1) + 1);
        let active = self.active.load(SeqCst);
        if active & 3 != code {
            self.active.store(((active >> 2).wrapping_add(1) << 2) | code, SeqCst);
        }
    }

    /// The agent: whether a lease on `slot` is held.
    pub(crate) fn held(&self, slot: u8) -> bool {
        self.held.get(usize::from(slot & 1)).is_some_and(|h| h.load(SeqCst) != 0)
    }
}

/// One use of the active model, on the slot it was taken on.
#[derive(Debug)]
pub struct Lease<'a> {
    leases: &'a Leases,
    slot: u8,
    generation: u32,
}

impl Lease<'_> {
    /// The slot to read the model from.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Changes whenever the active slot changes: a product that keeps an interpreter
    /// between inferences builds it again when this differs from the last one.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.leases.held.get(usize::from(self.slot)) {
            held.fetch_sub(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_pins_its_slot_across_a_switch() -> Result<(), &'static str> {
        let leases = Leases::new();
        assert!(leases.acquire().is_none(), "no model yet");
        leases.publish(Some(0));
        let lease = leases.acquire().ok_or("no lease on the active slot")?;
        assert_eq!(lease.slot(), 0);
        let first = lease.generation();
        leases.publish(Some(1));
        assert!(leases.held(0), "the old slot stays pinned");
        assert!(!leases.held(1));
        let next = leases.acquire().ok_or("no lease on the active slot")?;
        assert_eq!((next.slot(), next.generation()), (1, first + 1));
        drop(lease);
        assert!(!leases.held(0));
        assert!(leases.held(1));
        leases.publish(Some(1));
        assert_eq!(leases.acquire().map(|l| l.generation()), Some(first + 1), "no switch, same generation");
        leases.publish(None);
        assert!(leases.acquire().is_none());
        Ok(())
    }

    #[test]
    fn threads_never_see_their_slot_erased() {
        use std::sync::atomic::{AtomicBool, AtomicU8};
        let leases = Leases::new();
        let erased = [AtomicBool::new(false), AtomicBool::new(false)];
        let active = AtomicU8::new(0);
        leases.publish(Some(0));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if let Some(lease) = leases.acquire() {
                            let slot = usize::from(lease.slot());
                            assert!(!erased[slot].load(SeqCst), "slot {slot} erased under a lease");
                            std::hint::spin_loop();
                            assert!(!erased[slot].load(SeqCst), "slot {slot} erased under a lease");
                        }
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..2_000 {
                    // The agent: switch, then erase the old slot once no lease holds it,
                    // then write it back (an update) before the next switch.
                    let old = active.load(SeqCst);
                    let new = 1 - old;
                    leases.publish(Some(new));
                    active.store(new, SeqCst);
                    while leases.held(old) {
                        std::hint::spin_loop();
                    }
                    erased[usize::from(old)].store(true, SeqCst);
                    erased[usize::from(old)].store(false, SeqCst);
                }
            });
        });
    }
}
