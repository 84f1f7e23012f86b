//! A binding → its port's programs (template and concrete).

use crate::{lower, LowerError, PortProgram};
use gw_model::Binding;
use gw_resolve::{
    prepare, reserved, resolve_with, template, FilterSource, Params, Prepared, ResolveError, ResolveOptions, Resolved,
};

/// Why a binding cannot be enforced.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The binding names a filter that does not exist.
    #[error("port {port}: unknown filter '{filter}'")]
    UnknownFilter {
        /// The port.
        port: String,
        /// The filter.
        filter: String,
    },
    /// The filter does not resolve with the binding's parameters.
    #[error("port {port}: {source}")]
    Resolve {
        /// The port.
        port: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// A rule cannot be enforced.
    #[error("port {port}: {source}")]
    Lower {
        /// The port.
        port: String,
        /// Why.
        #[source]
        source: Box<LowerError>,
    },
    /// Compiling it panicked: a defect of guestwall, reported, never
    /// paired with another binding.
    #[error("port {port}: compiling this binding failed inside guestwall (a bug; please report it)")]
    Internal {
        /// The port.
        port: String,
    },
}

/// A binding's programs.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The filter's program with variables in place (shared by all ports
    /// bound to the filter).
    pub template: PortProgram,
    /// This port's program.
    pub concrete: PortProgram,
    /// This port's resolved rules.
    pub resolved: Resolved,
}

/// The parameters a binding's filter sees: the binding's own, with `$MAC`
/// defaulting to the binding's MAC address.
pub fn binding_params(b: &Binding) -> Params {
    let mut p = b.filterref.params.clone();
    p.entry(reserved::MAC.to_string()).or_insert_with(|| vec![gw_model::ParamValue::from(b.mac)]);
    p
}

/// Resolves and lowers a binding. `$IP`/`$IPV6` may be absent: rules that
/// need them then match nothing (until learning provides them).
pub fn bind(src: &dyn FilterSource, b: &Binding) -> Result<Bound, BindError> {
    let template = template_of(src, b)?;
    let (resolved, concrete) = concrete_of(src, b)?;
    Ok(Bound { template, concrete, resolved })
}

fn filter_of<'a>(src: &'a dyn FilterSource, b: &Binding) -> Result<&'a gw_model::Filter, BindError> {
    src.filter(&b.filterref.filter)
        .ok_or_else(|| BindError::UnknownFilter { port: b.portdev.to_string(), filter: b.filterref.filter.clone() })
}

/// The program shape of a binding's filter, the same for every port bound to
/// it (callers bind many ports to one filter: compute it once per filter).
pub fn template_of(src: &dyn FilterSource, b: &Binding) -> Result<PortProgram, BindError> {
    let port = || b.portdev.to_string();
    let shape = template(src, filter_of(src, b)?).map_err(|source| BindError::Resolve { port: port(), source })?;
    lower(&shape).map_err(|e| BindError::Lower { port: port(), source: Box::new(e) })
}

/// A binding's own rules and program.
pub fn concrete_of(src: &dyn FilterSource, b: &Binding) -> Result<(Resolved, PortProgram), BindError> {
    let port = || b.portdev.to_string();
    let params = binding_params(b);
    let resolved = resolve_with(src, filter_of(src, b)?, &params, &ResolveOptions::for_binding_params(&params))
        .map_err(|source| BindError::Resolve { port: port(), source })?;
    let concrete = lower(&resolved).map_err(|e| BindError::Lower { port: port(), source: Box::new(e) })?;
    Ok((resolved, concrete))
}

/// A filter walked once for [`concrete_with`] (many bindings of one filter).
pub fn prepared<'a>(src: &'a dyn FilterSource, b: &Binding) -> Result<Prepared<'a>, BindError> {
    prepare(src, filter_of(src, b)?).map_err(|source| BindError::Resolve { port: b.portdev.to_string(), source })
}

/// [`concrete_of`] for a binding of a [`prepared`] filter.
pub fn concrete_with(p: &Prepared, b: &Binding) -> Result<(Resolved, PortProgram), BindError> {
    let port = || b.portdev.to_string();
    let params = binding_params(b);
    let resolved = p
        .resolve(&params, &ResolveOptions::for_binding_params(&params))
        .map_err(|source| BindError::Resolve { port: port(), source })?;
    let concrete = lower(&resolved).map_err(|e| BindError::Lower { port: port(), source: Box::new(e) })?;
    Ok((resolved, concrete))
}
