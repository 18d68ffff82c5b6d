//! What `dsoftbus transfers` shows: pending offers, transfers in flight,
//! and a bounded history of finished ones.

use super::*;

/// A finished transfer or a refused offer.
#[derive(Clone, Debug)]
pub struct Record {
    pub incoming: bool,
    pub peer: String,
    pub name: String,
    pub total: u64,
    pub done: u64,
    pub ok: bool,
    pub result: String,
    pub secs: f64,
    pub ended: StdInstant,
}

impl Record {
    /// An incoming offer refused before any data.
    pub fn offer(peer: &str, name: &str, total: u64, why: &str) -> Record {
        Record {
            incoming: true,
            peer: peer.into(),
            name: name.into(),
            total,
            done: 0,
            ok: false,
            result: format!("refused: {why}"),
            secs: 0.0,
            ended: StdInstant::now(),
        }
    }
}

/// What `dsoftbus transfers` shows besides pending offers: transfers in
/// flight (one row each; bounded by the transfers themselves) and the last
/// [`HISTORY`] finished ones.
#[derive(Debug, Default)]
pub struct Board {
    next: u64,
    pub active: std::collections::BTreeMap<u64, Active>,
    pub history: VecDeque<Record>,
    pub(super) answered: VecDeque<(u32, &'static str)>,
}

impl Board {
    pub fn start(
        &mut self,
        incoming: bool,
        peer: &str,
        name: &str,
        total: u64,
        resumed: u64,
    ) -> u64 {
        self.next += 1;
        self.active.insert(
            self.next,
            Active {
                incoming,
                peer: peer.into(),
                name: name.into(),
                total,
                done: resumed,
                resumed,
                started: StdInstant::now(),
            },
        );
        self.next
    }

    pub fn progress(&mut self, key: u64, done: u64) {
        if let Some(a) = self.active.get_mut(&key) {
            a.done = done;
        }
    }

    pub fn finish(&mut self, key: u64, ok: bool, result: String) {
        if let Some(a) = self.active.remove(&key) {
            self.record(Record {
                incoming: a.incoming,
                peer: a.peer,
                name: a.name,
                total: a.total,
                done: a.done,
                ok,
                result,
                secs: a.started.elapsed().as_secs_f64(),
                ended: StdInstant::now(),
            });
        }
    }

    pub fn record(&mut self, r: Record) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(r);
    }

    /// Remembers how offer `id` was answered.
    pub fn answered(&mut self, id: u32, how: &'static str) {
        if self.answered.len() >= ANSWERED {
            self.answered.pop_front();
        }
        self.answered.push_back((id, how));
    }

    /// How offer `id` was answered, if it was (recently).
    pub fn was_answered(&self, id: u32) -> Option<&'static str> {
        self.answered
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, h)| *h)
    }
}
