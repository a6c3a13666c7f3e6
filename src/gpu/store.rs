//! The kernel choices of one device. Ops whose kernels come in named variants (the convolution
//! families) ask which variant an (op, shape) is built from; the store keeps the answer as the
//! variant's name (measured on this device, loaded from the tuning cache, or set), notes which
//! choices the device's plans used, and which (op, shape) were built untimed, to be timed later.
//! It never interprets a name: the [`KernelSet`] says which names a remembered choice may hold.

use super::choices::{self, AdapterId, Choice, KernelSet};
#[cfg(not(target_arch = "wasm32"))]
use super::TuningCache;
use super::{GpuOptions, OnMeasured, OpShape};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

/// One device's choices, and how it makes them.
pub(super) struct Store {
    /// What a choice may name, and the version remembered choices must carry.
    kernel_set: KernelSet,
    /// Whether ops with several variants time them per shape (see [`GpuOptions::tune`]).
    tune: bool,
    /// The variant `--kernels` forced, if any.
    forced: Option<&'static str>,
    /// The variant per (op, shape key).
    choices: RefCell<HashMap<OpShape, Choice>>,
    /// Where choices are remembered between runs (native, when tuning with a cache directory).
    #[cfg(not(target_arch = "wasm32"))]
    cache: Option<TuningCache>,
    /// Choices measured by this device (not loaded).
    measured: Cell<usize>,
    /// The (op, shape) whose choice a plan of this device looked up or measured.
    used: RefCell<HashSet<OpShape>>,
    /// Whether a failure to write the cache was reported (once is enough).
    #[cfg(not(target_arch = "wasm32"))]
    cache_warned: Cell<bool>,
    /// Warnings not yet taken by the caller (a cache file that cannot be read or written).
    warnings: RefCell<Vec<String>>,
    /// Tuning was asked for (`auto`) but this device cannot block to time (the browser): the
    /// (op, shape) built with the default variant, for the op's own `tune_pending`.
    untuned: Option<RefCell<Vec<OpShape>>>,
    /// Told of each measured choice (progress in a CLI).
    on_measured: OnMeasured,
}

impl Store {
    /// The store `opts` ask for on the adapter `info`, with the choices its cache remembers.
    pub(super) fn new(opts: &GpuOptions, info: &wgpu::AdapterInfo) -> Store {
        // timing kernels blocks, which the browser cannot do
        let wants_tuning = opts.kernel_family.is_none() && opts.tune.unwrap_or(true);
        let tune = !cfg!(target_arch = "wasm32") && wants_tuning && !opts.defer_tuning;
        #[cfg(not(target_arch = "wasm32"))]
        let cache = match (&opts.tuning_cache, tune) {
            (Some(dir), true) => Some(TuningCache::new(dir, info)),
            _ => None,
        };
        let warnings = RefCell::new(Vec::new());
        #[cfg(not(target_arch = "wasm32"))]
        let choices = remembered(cache.as_ref(), &mut warnings.borrow_mut());
        #[cfg(target_arch = "wasm32")]
        let (choices, _) = (HashMap::new(), info);
        Store {
            kernel_set: KernelSet::default(),
            tune,
            forced: opts.kernel_family,
            choices: RefCell::new(choices),
            #[cfg(not(target_arch = "wasm32"))]
            cache,
            measured: Cell::new(0),
            used: RefCell::new(HashSet::new()),
            #[cfg(not(target_arch = "wasm32"))]
            cache_warned: Cell::new(false),
            warnings,
            untuned: (wants_tuning && !tune).then(|| RefCell::new(Vec::new())),
            on_measured: opts.on_measured.clone(),
        }
    }

    /// Whether ops time their variants per shape.
    pub(super) fn tunes(&self) -> bool {
        self.tune
    }

    /// The variant `--kernels` forced, if any.
    pub(super) fn forced(&self) -> Option<&'static str> {
        self.forced
    }

    /// The variant chosen for `op` at `key`, if any; a plan that asks uses it.
    pub(super) fn get(&self, op: &str, key: &[usize]) -> Option<&'static str> {
        let id = (op.to_string(), key.to_vec());
        let variant = self.choices.borrow().get(&id).map(|c| c.family);
        if variant.is_some() {
            self.used.borrow_mut().insert(id);
        }
        variant
    }

    /// Records a choice (replacing any for its op and shape).
    pub(super) fn insert(&self, choice: Choice) {
        let key = (choice.op.clone(), choice.shape.clone());
        self.choices.borrow_mut().insert(key, choice);
    }

    /// Records a choice measured on this device, and remembers it in the cache file if there is
    /// one (a cache that cannot be written costs the next run its tuning, nothing else).
    pub(super) fn record_measured(&self, choice: Choice) {
        self.measured.set(self.measured.get() + 1);
        if let Some(tell) = &self.on_measured.0 {
            tell(&choice);
        }
        let id = (choice.op.clone(), choice.shape.clone());
        self.insert(choice);
        self.used.borrow_mut().insert(id);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.save(&self.all()) {
                if !self.cache_warned.replace(true) {
                    let w = format!("kernel choices {}: {e}", cache.path.display());
                    self.warnings.borrow_mut().push(w);
                }
            }
        }
    }

    /// Every choice, sorted by op and shape.
    pub(super) fn all(&self) -> Vec<Choice> {
        let mut v: Vec<Choice> = self.choices.borrow().values().cloned().collect();
        v.sort_by(|a, b| (&a.op, &a.shape).cmp(&(&b.op, &b.shape)));
        v
    }

    /// The choices plans looked up or measured, sorted by op and shape.
    pub(super) fn used(&self) -> Vec<Choice> {
        let used = self.used.borrow();
        let mut v = self.all();
        v.retain(|c| used.contains(&(c.op.clone(), c.shape.clone())));
        v
    }

    /// How many choices this device measured itself.
    pub(super) fn measured(&self) -> usize {
        self.measured.get()
    }

    /// Notes that `op` at `key` was built untimed although tuning was asked for.
    pub(super) fn note_untuned(&self, op: &str, key: &[usize]) {
        if let Some(list) = &self.untuned {
            let entry = (op.to_string(), key.to_vec());
            let mut list = list.borrow_mut();
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
    }

    /// The (op, shape) noted untuned, forgotten here.
    pub(super) fn take_untuned(&self) -> Vec<OpShape> {
        self.untuned
            .as_ref()
            .map(|l| std::mem::take(&mut *l.borrow_mut()))
            .unwrap_or_default()
    }

    /// Every choice as text, naming the adapter `info`.
    pub(super) fn to_json(&self, info: &wgpu::AdapterInfo) -> String {
        choices::to_json(&AdapterId::of(info), self.kernel_set.version, &self.all())
    }

    /// Takes the choices of [`Store::to_json`] text measured on `info` with this kernel set;
    /// returns how many, or why the text was not used.
    pub(super) fn load_json(&self, text: &str, info: &wgpu::AdapterInfo) -> Result<usize, String> {
        let loaded = choices::from_json(text, &AdapterId::of(info), &self.kernel_set)?;
        let n = loaded.len();
        loaded.into_iter().for_each(|c| self.insert(c));
        Ok(n)
    }

    /// The warnings since the last call.
    pub(super) fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// The file that remembers this adapter's choices, if tuning uses one.
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn cache(&self) -> Option<&TuningCache> {
        self.cache.as_ref()
    }
}

/// The choices remembered in `cache`, by (op, shape); a file that cannot be trusted is ignored
/// with a warning added to `warnings`.
#[cfg(not(target_arch = "wasm32"))]
fn remembered(cache: Option<&TuningCache>, warnings: &mut Vec<String>) -> HashMap<OpShape, Choice> {
    let Some(cache) = cache else {
        return HashMap::new();
    };
    let (choices, warning) = cache.load();
    warnings.extend(warning);
    choices
        .into_iter()
        .map(|c| ((c.op.clone(), c.shape.clone()), c))
        .collect()
}
