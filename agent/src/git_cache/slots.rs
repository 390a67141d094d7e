//! Build slots: each running job of a project holds one slot number, the
//! lowest free, and its build dir is `builds/<project>-<slot>`. A slot is
//! given back when its lease is dropped (the attempt ended), so two jobs
//! never share a dir and a project has at most `concurrency` dirs.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The slots taken, per project.
#[derive(Debug, Default, Clone)]
pub struct BuildSlots {
    taken: Arc<Mutex<HashMap<String, BTreeSet<usize>>>>,
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct SlotLease {
    slots: BuildSlots,
    project: String,
    pub slot: usize,
}

impl BuildSlots {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<usize>>> {
        // A panic elsewhere must not take the agent down with it.
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the lowest free slot of `project`.
    pub fn take(&self, project: &str) -> SlotLease {
        let mut taken = self.lock();
        let set = taken.entry(project.to_owned()).or_default();
        let slot = (0..).find(|slot| !set.contains(slot)).unwrap_or_default();
        set.insert(slot);
        SlotLease {
            slots: self.clone(),
            project: project.to_owned(),
            slot,
        }
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let mut taken = self.slots.lock();
        if let Some(set) = taken.get_mut(&self.project) {
            set.remove(&self.slot);
            if set.is_empty() {
                taken.remove(&self.project);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_slot_is_taken_and_given_back() {
        let slots = BuildSlots::default();
        let first = slots.take("app");
        let second = slots.take("app");
        let other = slots.take("lib");
        assert_eq!((first.slot, second.slot, other.slot), (0, 1, 0));
        drop(first);
        assert_eq!(slots.take("app").slot, 0, "given back");
        let third = slots.take("app");
        assert_eq!(third.slot, 0);
        assert_eq!(slots.take("app").slot, 2);
    }
}
