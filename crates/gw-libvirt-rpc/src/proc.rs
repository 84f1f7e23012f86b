//! The remote program's procedures the nwfilter driver serves
//! (remote_protocol.x): numbers, argument and return structs, the typed
//! [`Call`] and [`Reply`].

use crate::xdr::{self, Encode, NonnullString, RemoteString, Uuid, VarArray, Writer, XdrError, XdrString};

/// Procedure numbers (`remote_procedure`).
pub mod num {
    #![allow(missing_docs)]
    pub const CONNECT_OPEN: i32 = 1;
    pub const CONNECT_CLOSE: i32 = 2;
    pub const CONNECT_GET_TYPE: i32 = 3;
    pub const CONNECT_GET_VERSION: i32 = 4;
    pub const CONNECT_GET_HOSTNAME: i32 = 59;
    pub const CONNECT_SUPPORTS_FEATURE: i32 = 60;
    pub const AUTH_LIST: i32 = 66;
    pub const CONNECT_GET_URI: i32 = 110;
    pub const CONNECT_GET_LIB_VERSION: i32 = 157;
    pub const NWFILTER_LOOKUP_BY_NAME: i32 = 175;
    pub const NWFILTER_LOOKUP_BY_UUID: i32 = 176;
    pub const NWFILTER_GET_XML_DESC: i32 = 177;
    pub const CONNECT_NUM_OF_NWFILTERS: i32 = 178;
    pub const CONNECT_LIST_NWFILTERS: i32 = 179;
    pub const NWFILTER_DEFINE_XML: i32 = 180;
    pub const NWFILTER_UNDEFINE: i32 = 181;
    pub const CONNECT_LIST_ALL_NWFILTERS: i32 = 286;
    pub const CONNECT_REGISTER_CLOSE_CALLBACK: i32 = 360;
    pub const CONNECT_UNREGISTER_CLOSE_CALLBACK: i32 = 361;
    pub const NWFILTER_BINDING_LOOKUP_BY_PORT_DEV: i32 = 397;
    pub const NWFILTER_BINDING_GET_XML_DESC: i32 = 398;
    pub const NWFILTER_BINDING_CREATE_XML: i32 = 399;
    pub const NWFILTER_BINDING_DELETE: i32 = 400;
    pub const CONNECT_LIST_ALL_NWFILTER_BINDINGS: i32 = 401;
    pub const NWFILTER_DEFINE_XML_FLAGS: i32 = 431;
    /// The highest procedure libvirt 9.0 defines (REMOTE_PROC_DOMAIN_FD_ASSOCIATE).
    pub const LAST: i32 = 443;

    /// Every procedure [`super::Call::decode`] understands.
    pub const KNOWN: &[i32] = &[
        CONNECT_OPEN,
        CONNECT_CLOSE,
        CONNECT_GET_TYPE,
        CONNECT_GET_VERSION,
        CONNECT_GET_HOSTNAME,
        CONNECT_SUPPORTS_FEATURE,
        AUTH_LIST,
        CONNECT_GET_URI,
        CONNECT_GET_LIB_VERSION,
        NWFILTER_LOOKUP_BY_NAME,
        NWFILTER_LOOKUP_BY_UUID,
        NWFILTER_GET_XML_DESC,
        CONNECT_NUM_OF_NWFILTERS,
        CONNECT_LIST_NWFILTERS,
        NWFILTER_DEFINE_XML,
        NWFILTER_UNDEFINE,
        CONNECT_LIST_ALL_NWFILTERS,
        CONNECT_REGISTER_CLOSE_CALLBACK,
        CONNECT_UNREGISTER_CLOSE_CALLBACK,
        NWFILTER_BINDING_LOOKUP_BY_PORT_DEV,
        NWFILTER_BINDING_GET_XML_DESC,
        NWFILTER_BINDING_CREATE_XML,
        NWFILTER_BINDING_DELETE,
        CONNECT_LIST_ALL_NWFILTER_BINDINGS,
        NWFILTER_DEFINE_XML_FLAGS,
    ];
}

/// REMOTE_NWFILTER_LIST_MAX
pub const NWFILTER_LIST_MAX: usize = 16384;
/// REMOTE_NWFILTER_BINDING_LIST_MAX
pub const NWFILTER_BINDING_LIST_MAX: usize = 16384;
/// REMOTE_AUTH_TYPE_LIST_MAX
pub const AUTH_TYPE_LIST_MAX: usize = 20;
/// REMOTE_AUTH_NONE
pub const AUTH_NONE: i32 = 0;
/// VIR_NWFILTER_DEFINE_VALIDATE
pub const DEFINE_VALIDATE: u32 = 1;
/// VIR_NWFILTER_BINDING_CREATE_VALIDATE
pub const BINDING_CREATE_VALIDATE: u32 = 1;
/// VIR_CONNECT_RO
pub const CONNECT_RO: u32 = 1;

/// `virDrvFeature` numbers (libvirt_internal.h); they are wire values.
pub mod feature {
    #![allow(missing_docs)]
    pub const MIGRATION_V1: i32 = 1;
    pub const REMOTE: i32 = 2;
    pub const MIGRATION_V2: i32 = 3;
    pub const MIGRATION_P2P: i32 = 4;
    pub const MIGRATION_DIRECT: i32 = 5;
    pub const MIGRATION_V3: i32 = 6;
    pub const MIGRATE_CHANGE_PROTECTION: i32 = 7;
    pub const FD_PASSING: i32 = 8;
    pub const TYPED_PARAM_STRING: i32 = 9;
    pub const PROGRAM_KEEPALIVE: i32 = 10;
    pub const XML_MIGRATABLE: i32 = 11;
    pub const MIGRATION_OFFLINE: i32 = 12;
    pub const MIGRATION_PARAMS: i32 = 13;
    pub const REMOTE_EVENT_CALLBACK: i32 = 14;
    pub const REMOTE_CLOSE_CALLBACK: i32 = 15;
    pub const NETWORK_UPDATE_HAS_CORRECT_ORDER: i32 = 16;
}

xdr_struct! {
    /// `remote_nonnull_nwfilter`: how the protocol names a filter.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct FilterRef {
        /// The filter's name.
        pub name: NonnullString,
        /// The filter's UUID, raw bytes.
        pub uuid: Uuid,
    }
}

impl FilterRef {
    /// A reference from a name and UUID.
    pub fn new(name: impl Into<String>, uuid: Uuid) -> Self {
        FilterRef { name: XdrString(name.into()), uuid }
    }
}

xdr_struct! {
    /// `remote_nonnull_nwfilter_binding`: how the protocol names a binding.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct BindingRef {
        /// The port device (e.g. "vnet0"), the binding's key.
        pub portdev: NonnullString,
        /// The filter it binds.
        pub filtername: NonnullString,
    }
}

impl BindingRef {
    /// A reference from a port device and filter name.
    pub fn new(portdev: impl Into<String>, filtername: impl Into<String>) -> Self {
        BindingRef { portdev: XdrString(portdev.into()), filtername: XdrString(filtername.into()) }
    }
}

xdr_struct! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ConnectOpenArgs { pub name: RemoteString, pub flags: u32 }
}
xdr_struct! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct XmlFlagsArgs { pub xml: NonnullString, pub flags: u32 }
}
xdr_struct! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FilterFlagsArgs { pub nwfilter: FilterRef, pub flags: u32 }
}
xdr_struct! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct BindingFlagsArgs { pub nwfilter: BindingRef, pub flags: u32 }
}
xdr_struct! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListAllArgs { pub need_results: i32, pub flags: u32 }
}

/// A decoded call of the remote program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// REMOTE_PROC_CONNECT_OPEN
    ConnectOpen {
        /// The URI, e.g. "nwfilter:///system"; null is allowed on the wire.
        name: Option<String>,
        /// virConnectFlags.
        flags: u32,
    },
    /// REMOTE_PROC_CONNECT_CLOSE
    ConnectClose,
    /// REMOTE_PROC_AUTH_LIST
    AuthList,
    /// REMOTE_PROC_CONNECT_SUPPORTS_FEATURE
    SupportsFeature {
        /// A `virDrvFeature`.
        feature: i32,
    },
    /// REMOTE_PROC_CONNECT_GET_TYPE
    GetType,
    /// REMOTE_PROC_CONNECT_GET_VERSION
    GetVersion,
    /// REMOTE_PROC_CONNECT_GET_LIB_VERSION
    GetLibVersion,
    /// REMOTE_PROC_CONNECT_GET_HOSTNAME
    GetHostname,
    /// REMOTE_PROC_CONNECT_GET_URI
    GetUri,
    /// REMOTE_PROC_CONNECT_REGISTER_CLOSE_CALLBACK
    RegisterCloseCallback,
    /// REMOTE_PROC_CONNECT_UNREGISTER_CLOSE_CALLBACK
    UnregisterCloseCallback,
    /// REMOTE_PROC_CONNECT_NUM_OF_NWFILTERS
    NumOfFilters,
    /// REMOTE_PROC_CONNECT_LIST_NWFILTERS
    ListFilters {
        /// The most names the caller takes.
        maxnames: i32,
    },
    /// REMOTE_PROC_CONNECT_LIST_ALL_NWFILTERS
    ListAllFilters {
        /// Zero: only the count is wanted.
        need_results: i32,
        /// Must be 0.
        flags: u32,
    },
    /// REMOTE_PROC_NWFILTER_LOOKUP_BY_NAME
    FilterLookupByName {
        /// Filter name.
        name: String,
    },
    /// REMOTE_PROC_NWFILTER_LOOKUP_BY_UUID
    FilterLookupByUuid {
        /// Raw UUID.
        uuid: Uuid,
    },
    /// REMOTE_PROC_NWFILTER_DEFINE_XML (flags 0) and
    /// REMOTE_PROC_NWFILTER_DEFINE_XML_FLAGS.
    FilterDefineXml {
        /// The filter document.
        xml: String,
        /// VIR_NWFILTER_DEFINE_* flags; 0 for the plain call.
        flags: u32,
        /// Whether it came as the _FLAGS procedure (for error texts).
        with_flags: bool,
    },
    /// REMOTE_PROC_NWFILTER_UNDEFINE
    FilterUndefine {
        /// The filter.
        filter: FilterRef,
    },
    /// REMOTE_PROC_NWFILTER_GET_XML_DESC
    FilterGetXmlDesc {
        /// The filter.
        filter: FilterRef,
        /// Must be 0.
        flags: u32,
    },
    /// REMOTE_PROC_NWFILTER_BINDING_LOOKUP_BY_PORT_DEV
    BindingLookupByPortDev {
        /// Port device.
        portdev: String,
    },
    /// REMOTE_PROC_NWFILTER_BINDING_CREATE_XML
    BindingCreateXml {
        /// The binding document.
        xml: String,
        /// VIR_NWFILTER_BINDING_CREATE_* flags.
        flags: u32,
    },
    /// REMOTE_PROC_NWFILTER_BINDING_DELETE
    BindingDelete {
        /// The binding.
        binding: BindingRef,
    },
    /// REMOTE_PROC_NWFILTER_BINDING_GET_XML_DESC
    BindingGetXmlDesc {
        /// The binding.
        binding: BindingRef,
        /// Must be 0.
        flags: u32,
    },
    /// REMOTE_PROC_CONNECT_LIST_ALL_NWFILTER_BINDINGS
    ListAllBindings {
        /// Zero: only the count is wanted.
        need_results: i32,
        /// Must be 0.
        flags: u32,
    },
    /// Any other procedure number; its body is not looked at.
    Unsupported(i32),
}

impl Call {
    /// Decodes a call body for procedure `proc`.
    pub fn decode(proc: i32, body: &[u8]) -> Result<Call, XdrError> {
        use num::*;
        let call = match proc {
            CONNECT_OPEN => {
                let a: ConnectOpenArgs = xdr::from_bytes(body)?;
                Call::ConnectOpen { name: a.name.map(|s| s.0), flags: a.flags }
            }
            CONNECT_CLOSE => Call::ConnectClose,
            AUTH_LIST => Call::AuthList,
            CONNECT_SUPPORTS_FEATURE => Call::SupportsFeature { feature: xdr::from_bytes(body)? },
            CONNECT_GET_TYPE => Call::GetType,
            CONNECT_GET_VERSION => Call::GetVersion,
            CONNECT_GET_LIB_VERSION => Call::GetLibVersion,
            CONNECT_GET_HOSTNAME => Call::GetHostname,
            CONNECT_GET_URI => Call::GetUri,
            CONNECT_REGISTER_CLOSE_CALLBACK => Call::RegisterCloseCallback,
            CONNECT_UNREGISTER_CLOSE_CALLBACK => Call::UnregisterCloseCallback,
            CONNECT_NUM_OF_NWFILTERS => Call::NumOfFilters,
            CONNECT_LIST_NWFILTERS => Call::ListFilters { maxnames: xdr::from_bytes(body)? },
            CONNECT_LIST_ALL_NWFILTERS => {
                let a: ListAllArgs = xdr::from_bytes(body)?;
                Call::ListAllFilters { need_results: a.need_results, flags: a.flags }
            }
            NWFILTER_LOOKUP_BY_NAME => Call::FilterLookupByName { name: xdr::from_bytes::<NonnullString>(body)?.0 },
            NWFILTER_LOOKUP_BY_UUID => Call::FilterLookupByUuid { uuid: xdr::from_bytes(body)? },
            NWFILTER_DEFINE_XML => {
                Call::FilterDefineXml { xml: xdr::from_bytes::<NonnullString>(body)?.0, flags: 0, with_flags: false }
            }
            NWFILTER_DEFINE_XML_FLAGS => {
                let a: XmlFlagsArgs = xdr::from_bytes(body)?;
                Call::FilterDefineXml { xml: a.xml.0, flags: a.flags, with_flags: true }
            }
            NWFILTER_UNDEFINE => Call::FilterUndefine { filter: xdr::from_bytes(body)? },
            NWFILTER_GET_XML_DESC => {
                let a: FilterFlagsArgs = xdr::from_bytes(body)?;
                Call::FilterGetXmlDesc { filter: a.nwfilter, flags: a.flags }
            }
            NWFILTER_BINDING_LOOKUP_BY_PORT_DEV => {
                Call::BindingLookupByPortDev { portdev: xdr::from_bytes::<NonnullString>(body)?.0 }
            }
            NWFILTER_BINDING_CREATE_XML => {
                let a: XmlFlagsArgs = xdr::from_bytes(body)?;
                Call::BindingCreateXml { xml: a.xml.0, flags: a.flags }
            }
            NWFILTER_BINDING_DELETE => Call::BindingDelete { binding: xdr::from_bytes(body)? },
            NWFILTER_BINDING_GET_XML_DESC => {
                let a: BindingFlagsArgs = xdr::from_bytes(body)?;
                Call::BindingGetXmlDesc { binding: a.nwfilter, flags: a.flags }
            }
            CONNECT_LIST_ALL_NWFILTER_BINDINGS => {
                let a: ListAllArgs = xdr::from_bytes(body)?;
                Call::ListAllBindings { need_results: a.need_results, flags: a.flags }
            }
            other => Call::Unsupported(other),
        };
        Ok(call)
    }

    /// Encodes the call's arguments as a client would (for tests and tools).
    pub fn encode_args(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Call::ConnectOpen { name, flags } => {
                ConnectOpenArgs { name: name.clone().map(XdrString), flags: *flags }.encode(&mut w)
            }
            Call::SupportsFeature { feature } => feature.encode(&mut w),
            Call::ListFilters { maxnames } => maxnames.encode(&mut w),
            Call::ListAllFilters { need_results, flags } | Call::ListAllBindings { need_results, flags } => {
                ListAllArgs { need_results: *need_results, flags: *flags }.encode(&mut w)
            }
            Call::FilterLookupByName { name: s } | Call::BindingLookupByPortDev { portdev: s } => {
                s.as_str().encode(&mut w)
            }
            Call::FilterLookupByUuid { uuid } => uuid.encode(&mut w),
            Call::FilterDefineXml { xml, flags, with_flags } => {
                xml.as_str().encode(&mut w);
                if *with_flags {
                    flags.encode(&mut w);
                }
            }
            Call::BindingCreateXml { xml, flags } => {
                xml.as_str().encode(&mut w);
                flags.encode(&mut w);
            }
            Call::FilterUndefine { filter } => filter.encode(&mut w),
            Call::FilterGetXmlDesc { filter, flags } => {
                filter.encode(&mut w);
                flags.encode(&mut w);
            }
            Call::BindingDelete { binding } => binding.encode(&mut w),
            Call::BindingGetXmlDesc { binding, flags } => {
                binding.encode(&mut w);
                flags.encode(&mut w);
            }
            Call::ConnectClose
            | Call::AuthList
            | Call::GetType
            | Call::GetVersion
            | Call::GetLibVersion
            | Call::GetHostname
            | Call::GetUri
            | Call::RegisterCloseCallback
            | Call::UnregisterCloseCallback
            | Call::NumOfFilters
            | Call::Unsupported(_) => {}
        }
        w.into_bytes()
    }

    /// The procedure number this call travels as.
    pub fn proc(&self) -> i32 {
        use num::*;
        match self {
            Call::ConnectOpen { .. } => CONNECT_OPEN,
            Call::ConnectClose => CONNECT_CLOSE,
            Call::AuthList => AUTH_LIST,
            Call::SupportsFeature { .. } => CONNECT_SUPPORTS_FEATURE,
            Call::GetType => CONNECT_GET_TYPE,
            Call::GetVersion => CONNECT_GET_VERSION,
            Call::GetLibVersion => CONNECT_GET_LIB_VERSION,
            Call::GetHostname => CONNECT_GET_HOSTNAME,
            Call::GetUri => CONNECT_GET_URI,
            Call::RegisterCloseCallback => CONNECT_REGISTER_CLOSE_CALLBACK,
            Call::UnregisterCloseCallback => CONNECT_UNREGISTER_CLOSE_CALLBACK,
            Call::NumOfFilters => CONNECT_NUM_OF_NWFILTERS,
            Call::ListFilters { .. } => CONNECT_LIST_NWFILTERS,
            Call::ListAllFilters { .. } => CONNECT_LIST_ALL_NWFILTERS,
            Call::FilterLookupByName { .. } => NWFILTER_LOOKUP_BY_NAME,
            Call::FilterLookupByUuid { .. } => NWFILTER_LOOKUP_BY_UUID,
            Call::FilterDefineXml { with_flags: false, .. } => NWFILTER_DEFINE_XML,
            Call::FilterDefineXml { with_flags: true, .. } => NWFILTER_DEFINE_XML_FLAGS,
            Call::FilterUndefine { .. } => NWFILTER_UNDEFINE,
            Call::FilterGetXmlDesc { .. } => NWFILTER_GET_XML_DESC,
            Call::BindingLookupByPortDev { .. } => NWFILTER_BINDING_LOOKUP_BY_PORT_DEV,
            Call::BindingCreateXml { .. } => NWFILTER_BINDING_CREATE_XML,
            Call::BindingDelete { .. } => NWFILTER_BINDING_DELETE,
            Call::BindingGetXmlDesc { .. } => NWFILTER_BINDING_GET_XML_DESC,
            Call::ListAllBindings { .. } => CONNECT_LIST_ALL_NWFILTER_BINDINGS,
            Call::Unsupported(p) => *p,
        }
    }
}

/// A successful reply body, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `void` return.
    Empty,
    /// remote_auth_list_ret
    AuthList(Vec<i32>),
    /// A single `int` (supports_feature_ret, num_of_nwfilters_ret).
    Int(i32),
    /// A single `unsigned hyper` (get_version_ret, get_lib_version_ret).
    U64(u64),
    /// A single `remote_nonnull_string` (type, hostname, URI, XML).
    Str(String),
    /// remote_connect_list_nwfilters_ret
    Names(Vec<String>),
    /// A `remote_nonnull_nwfilter` (lookup, define).
    Filter(FilterRef),
    /// remote_connect_list_all_nwfilters_ret
    Filters {
        /// The filters, empty unless asked for.
        filters: Vec<FilterRef>,
        /// How many there are.
        ret: u32,
    },
    /// A `remote_nonnull_nwfilter_binding` (lookup, create).
    Binding(BindingRef),
    /// remote_connect_list_all_nwfilter_bindings_ret
    Bindings {
        /// The bindings, empty unless asked for.
        bindings: Vec<BindingRef>,
        /// How many there are.
        ret: u32,
    },
}

impl Encode for Reply {
    fn encode(&self, w: &mut Writer) {
        match self {
            Reply::Empty => {}
            Reply::AuthList(v) => {
                w.length(v.len());
                v.iter().for_each(|t| t.encode(w));
            }
            Reply::Int(v) => v.encode(w),
            Reply::U64(v) => v.encode(w),
            Reply::Str(s) => s.as_str().encode(w),
            Reply::Names(v) => {
                w.length(v.len());
                v.iter().for_each(|s| s.as_str().encode(w));
            }
            Reply::Filter(f) => f.encode(w),
            Reply::Filters { filters, ret } => {
                w.length(filters.len());
                filters.iter().for_each(|f| f.encode(w));
                ret.encode(w);
            }
            Reply::Binding(b) => b.encode(w),
            Reply::Bindings { bindings, ret } => {
                w.length(bindings.len());
                bindings.iter().for_each(|b| b.encode(w));
                ret.encode(w);
            }
        }
    }
}

xdr_struct! {
    /// remote_connect_list_all_nwfilters_ret, for decoding replies in tests.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListAllFiltersRet { pub filters: VarArray<FilterRef, NWFILTER_LIST_MAX>, pub ret: u32 }
}
xdr_struct! {
    /// remote_connect_list_all_nwfilter_bindings_ret, for decoding replies in tests.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListAllBindingsRet { pub bindings: VarArray<BindingRef, NWFILTER_BINDING_LIST_MAX>, pub ret: u32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    fn call() -> impl Strategy<Value = Call> {
        let fr = || (s(), any::<[u8; 16]>()).prop_map(|(n, u)| FilterRef::new(n, u));
        let br = || (s(), s()).prop_map(|(p, f)| BindingRef::new(p, f));
        prop_oneof![
            (proptest::option::of(s()), any::<u32>()).prop_map(|(name, flags)| Call::ConnectOpen { name, flags }),
            Just(Call::ConnectClose),
            Just(Call::AuthList),
            any::<i32>().prop_map(|feature| Call::SupportsFeature { feature }),
            Just(Call::GetType),
            Just(Call::GetVersion),
            Just(Call::GetLibVersion),
            Just(Call::GetHostname),
            Just(Call::GetUri),
            Just(Call::RegisterCloseCallback),
            Just(Call::UnregisterCloseCallback),
            Just(Call::NumOfFilters),
            any::<i32>().prop_map(|maxnames| Call::ListFilters { maxnames }),
            (any::<i32>(), any::<u32>()).prop_map(|(need_results, flags)| Call::ListAllFilters { need_results, flags }),
            s().prop_map(|name| Call::FilterLookupByName { name }),
            any::<[u8; 16]>().prop_map(|uuid| Call::FilterLookupByUuid { uuid }),
            (s(), any::<u32>(), any::<bool>()).prop_map(|(xml, flags, with_flags)| Call::FilterDefineXml {
                xml,
                flags: if with_flags { flags } else { 0 },
                with_flags
            }),
            fr().prop_map(|filter| Call::FilterUndefine { filter }),
            (fr(), any::<u32>()).prop_map(|(filter, flags)| Call::FilterGetXmlDesc { filter, flags }),
            s().prop_map(|portdev| Call::BindingLookupByPortDev { portdev }),
            (s(), any::<u32>()).prop_map(|(xml, flags)| Call::BindingCreateXml { xml, flags }),
            br().prop_map(|binding| Call::BindingDelete { binding }),
            (br(), any::<u32>()).prop_map(|(binding, flags)| Call::BindingGetXmlDesc { binding, flags }),
            (any::<i32>(), any::<u32>())
                .prop_map(|(need_results, flags)| Call::ListAllBindings { need_results, flags }),
        ]
    }

    proptest! {
        #[test]
        fn calls_round_trip(c in call()) {
            prop_assert_eq!(Call::decode(c.proc(), &c.encode_args()), Ok(c));
        }

        #[test]
        fn decode_never_panics(p in proptest::sample::select(num::KNOWN), body in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = Call::decode(p, &body);
        }

        #[test]
        fn list_replies_round_trip(names in proptest::collection::vec(s(), 0..5), u: [u8; 16]) {
            let filters: Vec<FilterRef> = names.iter().map(|n| FilterRef::new(n.clone(), u)).collect();
            let b = xdr::to_bytes(&Reply::Filters { filters: filters.clone(), ret: filters.len() as u32 });
            let back: ListAllFiltersRet = xdr::from_bytes(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.filters.0, filters);
            let bindings: Vec<BindingRef> = names.iter().map(|n| BindingRef::new(n.clone(), "f")).collect();
            let b = xdr::to_bytes(&Reply::Bindings { bindings: bindings.clone(), ret: 9 });
            let back: ListAllBindingsRet = xdr::from_bytes(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.bindings.0, bindings);
            prop_assert_eq!(back.ret, 9);
        }
    }

    #[test]
    fn unknown_procedure_is_unsupported() {
        assert_eq!(Call::decode(23, &[1, 2, 3]), Ok(Call::Unsupported(23)));
        assert_eq!(Call::decode(-5, &[]), Ok(Call::Unsupported(-5)));
    }
}
