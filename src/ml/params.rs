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

#[derive(Clone)]
pub struct Params {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    prefix: String,
    seed: u64,
    device: Device,
}

impl Params {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            prefix: String::new(),
            seed,
            device: device.clone(),
        }
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
            return Ok(v.as_tensor().clone());
        }
        let mut rng = Rng::for_name(self.seed, &name);
        let values = init(&mut rng, shape.elem_count());
        let var = Var::from_vec(values, shape, &self.device)?;
        let t = var.as_tensor().clone();
        vars.insert(name, var);
        Ok(t)
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

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Saves every parameter to one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
    }

    /// Overwrites every parameter from a safetensors file; a missing or mis-shaped name is an error,
    /// extra names in the file are ignored.
    pub fn load(&self, path: &Path) -> Result<()> {
        let mut file = candle_core::safetensors::load(path, &self.device)?;
        for (name, var) in self.vars() {
            let t = file.remove(&name).ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: no tensor named {name}", path.display()))
            })?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_depends_on_seed_and_name_not_order() -> Result<()> {
        let dev = Device::Cpu;
        let a = Params::new(3, &dev);
        let x1 = a.pp("m").normal("w", (4, 4), 0.02)?;
        let b = Params::new(3, &dev);
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
}
