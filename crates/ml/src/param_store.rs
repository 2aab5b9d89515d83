//! Named trainable parameters with seeded, order-independent initialisation.
//!
//! Plays the role of candle-nn's `VarMap` + `VarBuilder`, with two differences that training
//! needs: every initial value comes from `Rng::for_name(seed, name)` (candle's CPU RNG cannot be
//! seeded), and names are kept sorted so that anything iterating over parameters (gradient norm,
//! optimizer, checkpoint) does so in the same order on every run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};

use super::rng::Rng;

/// Which parameter names are frozen: the model gets them detached, the optimizer never sees them.
type FrozenRule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    prefix: String,
    seed: u64,
    device: Device,
    frozen: Option<FrozenRule>,
}

impl ParamStore {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            prefix: String::new(),
            seed,
            device: device.clone(),
            frozen: None,
        }
    }

    /// A store whose parameters named so that `is_frozen(name)` holds are handed to the model
    /// detached: no gradient is computed for them (the backward pass still flows *through*
    /// them) and [`ParamStore::trainable_vars`] leaves them out. Set it before building the model.
    pub fn with_frozen(mut self, is_frozen: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.frozen = Some(Arc::new(is_frozen));
        self
    }

    /// Whether a frozen rule is set ([`ParamStore::with_frozen`]), whatever it freezes.
    pub fn has_frozen_rule(&self) -> bool {
        self.frozen.is_some()
    }

    fn is_frozen(&self, full_name: &str) -> bool {
        self.frozen.as_ref().is_some_and(|f| f(full_name))
    }

    /// A view whose names are prefixed by `name.` (like `VarBuilder::pp`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            prefix: self.full_name(&name.to_string()),
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Returns the parameter `name`, creating it with `init(rng, n)` values when new.
    fn get_or_init(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: impl FnOnce(&mut Rng, usize) -> Vec<f32>,
    ) -> Result<Tensor> {
        let name = self.full_name(name);
        let shape = shape.into();
        let mut vars = self.vars.lock().expect("params lock");
        if let Some(v) = vars.get(&name) {
            if v.shape() != &shape {
                candle_core::bail!("parameter {name}: shape {:?}, asked {shape:?}", v.shape());
            }
            return Ok(self.hand_out(&name, v));
        }
        let mut rng = Rng::for_name(self.seed, &name);
        let values = init(&mut rng, shape.elem_count());
        let var = Var::from_vec(values, shape, &self.device)?;
        let t = self.hand_out(&name, &var);
        vars.insert(name, var);
        Ok(t)
    }

    /// The tensor a model holds for `var`: detached when frozen. A detached tensor shares the
    /// variable's storage, so loading weights later still reaches the model.
    fn hand_out(&self, name: &str, var: &Var) -> Tensor {
        if self.is_frozen(name) {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        }
    }

    /// Adds (or replaces) the parameter `name` with a copy of `value` as f32 on this device: how
    /// a checkpoint's tensors become parameters that a model's constructor then finds by name.
    pub fn insert(&self, name: &str, value: &Tensor) -> Result<()> {
        let value = value.to_dtype(DType::F32)?.to_device(&self.device)?;
        // `detach` so that a tensor that is itself a `Var` is copied, never shared.
        let var = Var::from_tensor(&value.detach())?;
        let mut vars = self.vars.lock().expect("params lock");
        vars.insert(self.full_name(name), var);
        Ok(())
    }

    /// Normal(0, std²) values.
    pub fn normal(&self, name: &str, shape: impl Into<Shape>, std: f64) -> Result<Tensor> {
        self.get_or_init(name, shape, |rng, n| {
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        })
    }

    pub fn constant(&self, name: &str, shape: impl Into<Shape>, value: f32) -> Result<Tensor> {
        self.get_or_init(name, shape, |_, n| vec![value; n])
    }

    pub fn zeros(&self, name: &str, shape: impl Into<Shape>) -> Result<Tensor> {
        self.constant(name, shape, 0.0)
    }

    pub fn ones(&self, name: &str, shape: impl Into<Shape>) -> Result<Tensor> {
        self.constant(name, shape, 1.0)
    }

    /// All parameters, sorted by name (the whole store, whatever this view's prefix).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let vars = self.vars.lock().expect("params lock");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The parameters an optimizer should update: [`ParamStore::vars`] less the frozen ones.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.vars();
        vars.retain(|(name, _)| !self.is_frozen(name));
        vars
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Saves every parameter to one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_vars(&self.vars(), path)
    }

    /// Overwrites every parameter from a safetensors file; a missing or mis-shaped name is an error,
    /// extra names in the file are ignored.
    pub fn load(&self, path: &Path) -> Result<()> {
        self.load_prefixed(path, "")
    }

    /// Overwrites each parameter of `source` in this store (same name, same shape): how a
    /// loaded language model's weights go into a VLM that holds it under the same names.
    pub fn copy_from(&self, source: &ParamStore) -> Result<()> {
        let mine: BTreeMap<String, Var> = self.vars().into_iter().collect();
        for (name, var) in source.vars() {
            let Some(target) = mine.get(&name) else {
                candle_core::bail!("copying parameters: this model has no {name}");
            };
            if target.shape() != var.shape() {
                candle_core::bail!(
                    "copying parameters: {name} has shape {:?} here, {:?} in the source",
                    target.shape(),
                    var.shape()
                );
            }
            target.set(var.as_tensor())?;
        }
        Ok(())
    }

    /// [`ParamStore::load`] for the parameters whose names start with `prefix` only (e.g. `vision.`
    /// from a CLIP checkpoint into a VLM); the others keep their values.
    pub fn load_prefixed(&self, path: &Path, prefix: &str) -> Result<()> {
        self.load_matching(path, |name| name.starts_with(prefix))
    }

    /// [`ParamStore::load`] for the parameters whose names pass `keep` only.
    pub fn load_matching(&self, path: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
        let mut vars = self.vars();
        vars.retain(|(name, _)| keep(name));
        load_vars(&vars, path, &self.device)
    }
}

/// Saves `vars` to one safetensors file under their names.
pub fn save_vars(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path)
}

/// Overwrites each of `vars` from the tensor of its name in a safetensors file; a missing or
/// mis-shaped name is an error, extra names in the file are ignored.
pub fn load_vars(vars: &[(String, Var)], path: &Path, device: &Device) -> Result<()> {
    let mut file = candle_core::safetensors::load(path, device)?;
    for (name, var) in vars {
        let t = file.remove(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: no tensor named {name}", path.display()))
        })?;
        if !t.dtype().is_float() {
            candle_core::bail!(
                "{}: {name} is stored as {:?}; weights must be a float type (F32, F16, BF16, F64)",
                path.display(),
                t.dtype()
            );
        }
        if t.shape() != var.shape() {
            candle_core::bail!(
                "{}: {name} has shape {:?}, the model wants {:?}",
                path.display(),
                t.shape(),
                var.shape()
            );
        }
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_depends_on_seed_and_name_not_order() -> Result<()> {
        let dev = Device::Cpu;
        let a = ParamStore::new(3, &dev);
        let x1 = a.pp("m").normal("w", (4, 4), 0.02)?;
        let b = ParamStore::new(3, &dev);
        b.zeros("other", 5)?;
        let x2 = b.pp("m").normal("w", (4, 4), 0.02)?;
        assert_eq!(x1.to_vec2::<f32>()?, x2.to_vec2::<f32>()?);
        let names: Vec<_> = b.vars().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["m.w", "other"]);
        // Asking again returns the same variable.
        let again = b.pp("m").normal("w", (4, 4), 1.0)?;
        assert_eq!(again.id(), x2.id());
        Ok(())
    }

    #[test]
    fn frozen_parameters_get_no_gradient_but_pass_one_through() -> Result<()> {
        let p = ParamStore::new(0, &Device::Cpu).with_frozen(|name| name.starts_with("a."));
        let a = p.pp("a").normal("w", (3, 3), 1.0)?;
        let b = p.pp("b").normal("w", (3, 3), 1.0)?;
        let x = Tensor::ones((1, 3), DType::F32, &Device::Cpu)?;
        let loss = x.matmul(&b)?.matmul(&a)?.sum_all()?;
        let grads = loss.backward()?;
        let vars: BTreeMap<_, _> = p.vars().into_iter().collect();
        assert!(grads.get(vars["a.w"].as_tensor()).is_none());
        assert!(grads.get(&b).is_some());
        let trainable: Vec<_> = p.trainable_vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(trainable, ["b.w"]);
        // Loading reaches the frozen tensor the model holds.
        vars["a.w"].set(&Tensor::zeros((3, 3), DType::F32, &Device::Cpu)?)?;
        assert_eq!(a.sum_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
