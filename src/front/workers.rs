//! The threads that serve client connections: one single-threaded tokio
//! runtime per core, as nginx runs one worker process per core.
//!
//! Each thread accepts on its own registration of the listening sockets
//! (see listen.rs), and a connection stays on the thread that accepted it
//! until it closes: its TLS, its requests, its connection to Jupyter and
//! its WebSocket. Serving it never waits for
//! another thread to be woken. On one multi-threaded runtime such wake-ups
//! (a futex and an eventfd call or two per proxied request, as tasks hopped
//! between the runtime's threads) cost about a fifth of notebookd's CPU
//! time per request.

use std::future::Future;
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The worker threads and their runtimes.
pub struct Workers {
    runtimes: Vec<Handle>,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut runtimes = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("notebookd-w{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(runtime.handle().clone()));
                    // Connections run while this waits; dropping the runtime
                    // afterwards cancels whatever is left (after the drain).
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?;
            let runtime = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended as it started"))??;
            runtimes.push(runtime);
            stops.push(stop_tx);
            threads.push(thread);
        }
        Ok(Workers {
            runtimes,
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.runtimes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runtimes.is_empty()
    }

    /// Runs `task` on worker thread `i` (modulo their number).
    pub fn spawn_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A stopped runtime cancels the task at once: nothing to report.
        drop(self.runtimes[i % self.runtimes.len()].spawn(task));
    }

    /// Stops the threads, cancelling what still runs on them, and waits for
    /// them to end. Blocks: call it from a blocking context.
    pub fn stop(&self) {
        if let Ok(mut stops) = self.stops.lock() {
            stops.clear();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_named_and_stop_ends_them() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            workers.spawn_on(i, async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "notebookd-w0",
                "notebookd-w0",
                "notebookd-w1",
                "notebookd-w1"
            ]
        );
        // A task still pending when the workers stop is cancelled, not leaked.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        workers.spawn_on(0, async move {
            let _held = done_tx;
            std::future::pending::<()>().await;
        });
        workers.stop();
        assert!(done_rx.recv().is_err(), "the pending task was dropped");
    }
}
