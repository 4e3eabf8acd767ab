//! Panics inside a simulated node are violations, not crashes of the
//! simulator: each event runs under `catch_unwind`, and this hook keeps the
//! message (with its location) instead of printing it.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs (once per process) a panic hook that records the message and
/// location of panics on simulator threads instead of printing them.
/// Panics outside a simulation (no `raft_sim` frame in flight) still reach
/// the previous hook, so tests keep their normal output.
pub fn install_quiet_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_sim = IN_SIM.with(|f| *f.borrow());
            if in_sim {
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}: ", l.file(), l.line()))
                    .unwrap_or_default();
                let msg = payload_str(info.payload());
                LAST.with(|l| *l.borrow_mut() = Some(format!("{loc}{msg}")));
            } else {
                previous(info);
            }
        }));
    });
}

thread_local! {
    static IN_SIM: RefCell<bool> = const { RefCell::new(false) };
}

/// Marks the current thread as running a simulation (panics are caught and
/// recorded quietly) while the guard lives.
pub struct SimGuard(());

impl SimGuard {
    pub fn enter() -> SimGuard {
        IN_SIM.with(|f| *f.borrow_mut() = true);
        SimGuard(())
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        IN_SIM.with(|f| *f.borrow_mut() = false);
    }
}

fn payload_str(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// The recorded message of the panic whose payload is `payload`.
pub fn message(payload: Box<dyn Any + Send>) -> String {
    LAST.with(|l| l.borrow_mut().take())
        .unwrap_or_else(|| payload_str(payload.as_ref()))
}
