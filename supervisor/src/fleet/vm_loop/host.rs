//! Where a VM loop serves its events once its VM is set up: on the thread that set it up, alone
//! (a backend that runs guests), or on one of a few *loop hosts* shared by every such loop of the
//! process (a backend that does not: a replay, a model).
//!
//! Why two ways. A loop spends its life waiting; what costs is its thread: creating it, its
//! stack (each touched page counts once per VM: a 1,000-VM replay's peak held ~16 MiB of loop
//! stacks), and a context switch for every wake-up. A replay or a model answers from data, its
//! vCPUs never spin, and its loops' handlers are short, so many loops share a thread: one epoll
//! for all of them, a wake-up that finds several VMs' notices serves them together, and the
//! thread that set the VM up goes back to the pool for the next VM or vCPU. A fleet of real
//! guests keeps one thread per loop: thousands of spinning vCPU threads at nice 10 still leave a
//! nice-0 thread per loop its share of the CPU, where a host serving hundreds of loops would get
//! one thread's share for all of them, and a blocking handler (joining vCPU threads, tearing a VM
//! down under MMU-notifier load) holds up only its own VM.
//!
//! A hosted loop that blocks (a teardown's calls, after-run writes) holds up the other loops of
//! its host until it returns; a replay's calls wait at most for the feeder, whose window grows
//! when nothing is taken (see `recorder::replay::feed`), so this slows a replay down but never
//! deadlocks it. A hosted loop that panics ends alone: its host drops it (its waiters hear that
//! the loop ended) and serves the others.
//!
//! A loop that ended for a process about to exit (`Command::Exit`) is kept by its host, never
//! dropped, as a loop on its own thread parks for good (see the parent module).

use super::{VmLoop, park_for_good};
use crate::fleet::threads::THREAD_STACK;
use event_manager::{
    EventManager, EventOps, Events, MutEventSubscriber, RemoteEndpoint, SubscriberId, SubscriberOps,
};
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The most loop hosts a process starts (one per CPU up to this): more only adds threads that
/// wait, since hosted loops never block on a guest.
const MAX_HOSTS: usize = 4;

/// A VM loop as a host holds it: the loop and the id its host gave it.
pub(super) struct Hosted {
    vm: Box<VmLoop>,
    id: Option<SubscriberId>,
}

thread_local! {
    /// The loops of this host that are done, to be let go of (or kept) once the host's current
    /// round of events is over: a subscriber cannot be removed while it is being served.
    static FINISHED: RefCell<Vec<SubscriberId>> = const { RefCell::new(Vec::new()) };
}

impl Hosted {
    fn finish(&self) {
        if let Some(id) = self.id {
            FINISHED.with(|f| f.borrow_mut().push(id));
        }
    }
}

impl MutEventSubscriber for Hosted {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let served = catch_unwind(AssertUnwindSafe(|| self.vm.process(events, ops)));
        if served.is_err() {
            // The panic message is already on stderr. The loop's state is unknown: let it go.
            tracing::error!(
                vm = self.vm.name(),
                "the VM loop panicked; its VM is abandoned"
            );
            self.vm.done = true;
            self.vm.exiting = false;
        }
        if self.vm.done {
            self.finish();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.vm.init(ops);
    }
}

/// The process's loop hosts, started with the first hosted loop.
struct LoopHosts {
    endpoints: Vec<RemoteEndpoint<Hosted>>,
    next: AtomicUsize,
}

fn hosts() -> Option<&'static LoopHosts> {
    static HOSTS: OnceLock<Option<LoopHosts>> = OnceLock::new();
    HOSTS
        .get_or_init(|| {
            let count = std::thread::available_parallelism()
                .map_or(1, usize::from)
                .clamp(1, MAX_HOSTS);
            let endpoints: Vec<_> = (0..count).filter_map(start_host).collect();
            (!endpoints.is_empty()).then(|| LoopHosts {
                endpoints,
                next: AtomicUsize::new(0),
            })
        })
        .as_ref()
}

/// Start loop host `index`: its thread, its event manager; `None` (logged) if either fails.
fn start_host(index: usize) -> Option<RemoteEndpoint<Hosted>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name(format!("vmfleet-loops-{index}"))
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let mut manager = match EventManager::<Hosted>::new() {
                Ok(manager) => manager,
                Err(e) => {
                    tracing::warn!("loop host {index}: no event manager: {e}");
                    return;
                }
            };
            let _ = tx.send(manager.remote_endpoint());
            drop(tx);
            serve(&mut manager);
        });
    if let Err(e) = spawned {
        tracing::warn!("loop host {index}: no thread: {e}");
        return None;
    }
    rx.recv().ok()
}

/// A loop host's life: serve its loops' events; after each round, let go of the loops that are
/// done (kept, for a process about to exit).
fn serve(manager: &mut EventManager<Hosted>) -> ! {
    let mut kept = Vec::new();
    loop {
        if let Err(e) = manager.run() {
            // epoll_wait itself failed (EINTR comes back as Ok(0)); nothing a loop can fix.
            tracing::error!("loop host: waiting for events failed: {e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let finished = FINISHED.with(|f| std::mem::take(&mut *f.borrow_mut()));
        for id in finished {
            if let Ok(hosted) = manager.remove_subscriber(id) {
                if hosted.vm.exiting {
                    kept.push(hosted);
                }
            }
        }
    }
}

/// Set a VM loop up with `set_up` and serve its events until it is done: both on a loop host
/// when `hosted` (see the module's documentation), else on a pool thread of its own. Fails only
/// if neither a host nor a thread could take it.
pub(super) fn run(
    name: &str,
    hosted: bool,
    set_up: impl FnOnce() -> Option<Box<VmLoop>> + Send + 'static,
) -> std::io::Result<()> {
    if hosted {
        if let Some(hosts) = hosts() {
            let at = hosts.next.fetch_add(1, Ordering::Relaxed) % hosts.endpoints.len();
            return hosts.endpoints[at]
                .fire(move |ops| {
                    // A setup that panics ends alone, as a hosted loop does.
                    let Ok(Some(vm)) = catch_unwind(AssertUnwindSafe(set_up)) else {
                        return;
                    };
                    let id = ops.add_subscriber(Hosted { vm, id: None });
                    if let Ok(hosted) = ops.subscriber_mut(id) {
                        hosted.id = Some(id);
                        if let Some(why) = hosted.vm.broken.take() {
                            hosted.vm.abandon(why);
                        }
                        if hosted.vm.done {
                            hosted.finish();
                        }
                    }
                })
                .map_err(|e| std::io::Error::other(format!("loop host {at}: {e}")));
        }
    }
    crate::fleet::threads::pool()
        .spawn(format!("vm-{name}"), move || {
            if let Some(vm) = set_up() {
                serve_here(vm);
            }
        })
        .map(drop)
}

/// Serve `vm` on this thread until it is done; a VM of a process about to exit then keeps the
/// thread (parked) with everything it holds.
fn serve_here(vm: Box<VmLoop>) {
    let shared = std::rc::Rc::new(RefCell::new(vm));
    let mut manager = match EventManager::<std::rc::Rc<RefCell<Box<VmLoop>>>>::new() {
        Ok(manager) => manager,
        Err(e) => {
            shared
                .borrow_mut()
                .abandon(super::VmError::EventManager(std::sync::Arc::new(e)));
            return;
        }
    };
    manager.add_subscriber(std::rc::Rc::clone(&shared));
    if let Some(why) = shared.borrow_mut().broken.take() {
        shared.borrow_mut().abandon(why);
        return;
    }
    while !shared.borrow().done {
        if let Err(e) = manager.run() {
            shared
                .borrow_mut()
                .abandon(super::VmError::EventLoop(std::sync::Arc::new(e)));
            return;
        }
    }
    if shared.borrow().exiting {
        // Answered with the final report: keep the VM, its vCPUs and its memory (and this
        // thread's stack) until the process exits.
        park_for_good();
    }
}
