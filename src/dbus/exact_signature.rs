//! Exact body signatures for method calls (contract §10).
//!
//! zvariant reads a body `ssss` and a body `(ssss)` as the same structure,
//! so a call that sends a struct argument's fields instead of the struct
//! would be executed. Every call of a wrapped interface has the signature in
//! its header compared, byte for byte, with the method's; any other body
//! answers `InvalidArgs` before it is deserialised.

use std::collections::HashMap;
use std::fmt::Write;
use std::ops::Deref;

use zbus::fdo;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::zvariant::{OwnedVariant, Variant};
use zbus::{Connection, ObjectServer};

use super::error::BusError;

/// An interface whose methods are only called with their exact body
/// signatures.
pub(super) struct ExactSignatures<I> {
    inner: I,
    /// Method name to the concatenated signatures of its in-arguments.
    methods: &'static [(&'static str, &'static str)],
}

impl<I> ExactSignatures<I> {
    /// `methods` lists every method of `inner` with its in-signature; a
    /// method not listed is refused.
    pub(super) fn new(inner: I, methods: &'static [(&'static str, &'static str)]) -> Self {
        Self { inner, methods }
    }

    fn check(&self, msg: &Message, member: &str) -> Result<(), BusError> {
        let Some(&(_, expected)) = self.methods.iter().find(|(name, _)| *name == member) else {
            // Not a method: the interface answers UnknownMethod.
            return Ok(());
        };
        let got = body_signature(msg.data().bytes())
            .ok_or_else(|| BusError::InvalidArgs("unreadable message header".to_owned()))?;
        if got == expected.as_bytes() {
            Ok(())
        } else {
            Err(BusError::InvalidArgs(format!(
                "{member} takes a body of signature `{expected}`, not `{}`",
                String::from_utf8_lossy(got)
            )))
        }
    }

    fn refuse<'call>(error: BusError) -> DispatchResult<'call> {
        DispatchResult::Async(Box::pin(async move { Err(Box::new(error) as _) }))
    }
}

impl<I> Deref for ExactSignatures<I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<I: Interface> Interface for ExactSignatures<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, zbus::BoxDBusError>> {
        self.inner
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        self.inner
            .get_all(server, connection, header, emitter)
            .await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Variant<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        self.inner
            .set(property_name, value, server, connection, header, emitter)
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), zbus::BoxDBusError>> {
        self.inner
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        match self.check(msg, name.as_str()) {
            Ok(()) => self.inner.call(server, connection, msg, name),
            Err(e) => Self::refuse(e),
        }
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        match self.check(msg, name.as_str()) {
            Ok(()) => self.inner.call_mut(server, connection, msg, name),
            Err(e) => Self::refuse(e),
        }
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        self.inner.introspect_to_writer(writer, level)
    }
}

/// Header field code of the body signature (D-Bus specification, "Message
/// Format").
const FIELD_SIGNATURE: u8 = 8;

/// The body signature as the sender wrote it in the header: empty when the
/// field is absent, `None` when the header cannot be read. zbus has already
/// validated the message, so this only walks the field array.
fn body_signature(message: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = message.get(at..at + 4)?.try_into().ok()?;
        let value = match message.first()? {
            b'l' => u32::from_le_bytes(bytes),
            b'B' => u32::from_be_bytes(bytes),
            _ => return None,
        };
        usize::try_from(value).ok()
    };
    let align = |at: usize, to: usize| at.div_ceil(to) * to;
    let fields_end = 16usize.checked_add(u32_at(12)?)?;
    let mut at = 16;
    while at < fields_end {
        at = align(at, 8);
        let code = *message.get(at)?;
        let type_len = usize::from(*message.get(at + 1)?);
        let value_type = message.get(at + 2..at + 2 + type_len)?;
        at += 2 + type_len + 1;
        let value = match value_type {
            b"s" | b"o" => {
                at = align(at, 4);
                let len = u32_at(at)?;
                let value = message.get(at + 4..at + 4 + len)?;
                at += 4 + len + 1;
                value
            }
            b"g" => {
                let len = usize::from(*message.get(at)?);
                let value = message.get(at + 1..at + 1 + len)?;
                at += 1 + len + 1;
                value
            }
            b"u" => {
                at = align(at, 4) + 4;
                continue;
            }
            _ => return None,
        };
        if code == FIELD_SIGNATURE {
            return Some(value);
        }
    }
    Some(b"")
}

#[cfg(test)]
mod tests {
    use super::body_signature;
    use zbus::message::Message;

    fn call_with<B>(body: &B) -> Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::method_call("/org/evsec/EvseSecurity1", "DeleteCertificate")
            .interface("org.evsec.EvseSecurity1")
            .destination("org.evsec.EvseSecurity1")
            .build(body)
            .unwrap()
    }

    #[test]
    fn reads_the_signature_as_sent() {
        let fields = ("a", "b", "c", "d");
        let loose = call_with(&fields);
        let wrapped = call_with(&(fields,));
        assert_eq!(body_signature(loose.data().bytes()), Some(&b"ssss"[..]));
        assert_eq!(body_signature(wrapped.data().bytes()), Some(&b"(ssss)"[..]));
        let empty = call_with(&());
        assert_eq!(body_signature(empty.data().bytes()), Some(&b""[..]));
    }

    #[test]
    fn a_truncated_header_is_unreadable() {
        let msg = call_with(&("x",));
        let bytes = msg.data().bytes();
        assert_eq!(body_signature(&bytes[..20]), None);
        assert_eq!(body_signature(&[]), None);
    }
}
