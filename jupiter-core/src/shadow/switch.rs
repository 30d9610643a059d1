//! The run-time switch of a service ([`ShadowSwitch`]).

use super::*;

/// A service's shadow switch, changeable at run time. Cheap to clone; clones share the switch.
#[derive(Clone, Debug)]
pub struct ShadowSwitch(Arc<AtomicU8>);

impl ShadowSwitch {
    /// A switch in `mode`.
    pub fn new(mode: ShadowMode) -> Self {
        ShadowSwitch(Arc::new(AtomicU8::new(mode.to_u8())))
    }

    /// The current mode.
    pub fn mode(&self) -> ShadowMode {
        ShadowMode::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Changes the mode.
    pub fn set(&self, mode: ShadowMode) {
        self.0.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// A switch that follows the `[shadow]` section of `config` (dynamic reloads included).
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The section is invalid.
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::Error> {
        let mut rx = config.subscribe::<ShadowConfig>("shadow")?;
        let switch = ShadowSwitch::new(rx.borrow_and_update().mode);
        let weak = Arc::downgrade(&switch.0);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(cell) = weak.upgrade() else { return };
                let mode = rx.borrow_and_update().mode;
                cell.store(mode.to_u8(), Ordering::Relaxed);
                tracing::info!(mode = mode.as_str(), "shadow switch changed");
            }
        });
        Ok(switch)
    }
}

pub(super) type ShadowCounter = Family<Vec<(&'static str, String)>, Counter>;
