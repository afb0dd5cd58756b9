//! What the outside (health endpoints, tests) can see of a running worker: a view of the
//! connection and consumer metrics, which are the one record of that state, of the pools and of
//! the readiness of the kinds whose backends can be down.

use std::sync::Arc;

use crate::decide;
use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::registry::Registry;

#[derive(Debug, Clone)]
pub struct Health {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) queues: Vec<String>,
    pub(crate) pools: Vec<WorkerPool>,
    pub(crate) pool_size: usize,
    pub(crate) registry: Arc<Registry>,
    /// The broker node of the current session.
    pub(crate) node: Arc<std::sync::Mutex<String>>,
}

impl Health {
    /// Connected, consuming every queue, every kind's backend ready, the topology whole, and not
    /// worn out by abandoned job threads.
    pub fn is_ready(&self) -> bool {
        let abandoned = self.pools.iter().map(WorkerPool::abandoned).sum();
        decide::ready(decide::Readiness {
            connected: self.metrics.is_connected(),
            consuming: &self.metrics.consuming_each(&self.queues),
            model_ready: self.model_ready(),
            topology_whole: !self.metrics.is_topology_missing(),
            abandoned,
            pool: self.pool_size,
        })
    }

    /// Ready or not, with the node it is on or what is missing: the body of `/readyz`.
    pub fn status(&self) -> (bool, String) {
        let node = self.node();
        if self.is_ready() {
            return (true, format!("consuming {} queues on node {node}", self.queues.len()));
        }
        let consuming = self.metrics.consuming_each(&self.queues);
        let mut missing: Vec<String> = Vec::new();
        if !self.metrics.is_connected() {
            missing.push(format!("not connected (last node {node})"));
        }
        let idle: Vec<&str> =
            self.queues.iter().zip(&consuming).filter(|(_, c)| !**c).map(|(q, _)| q.as_str()).collect();
        if !idle.is_empty() {
            missing.push(format!("not consuming {}", idle.join(", ")));
        }
        for kind in self.registry.not_ready() {
            missing.push(format!("the model (backend) of {kind} is not ready"));
        }
        if self.metrics.is_topology_missing() {
            missing.push("an exchange of the topology is missing; declaring the topology again".to_owned());
        }
        let abandoned: usize = self.pools.iter().map(WorkerPool::abandoned).sum();
        if decide::worn_out(abandoned, self.pool_size) {
            missing.push(format!("{abandoned} job threads abandoned (pool of {})", self.pool_size));
        }
        (false, missing.join("; "))
    }

    /// The broker node of the current session (`host:port`).
    pub fn node(&self) -> String {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every served kind's backend can take requests now (true when none can be down).
    pub fn model_ready(&self) -> bool {
        self.registry.not_ready().is_empty()
    }

    /// Connections re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.metrics.reconnects()
    }
}
