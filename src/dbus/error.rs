//! The errors a call can answer, mapped to their D-Bus names in this one
//! place.

use zbus::message::Header;
use zbus::names::ErrorName;
use zbus::DBusError;

use super::ERROR_PREFIX;
use crate::security;

/// Every error a method can answer, mapped to its D-Bus name in one place.
#[derive(Debug)]
pub enum BusError {
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    InvalidArgs(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`.
    AccessDenied(String),
    /// `org.freedesktop.DBus.Error.LimitsExceeded`.
    LimitsExceeded(String),
    /// `org.freedesktop.DBus.Error.UnknownInterface`.
    UnknownInterface(String),
    /// `org.freedesktop.DBus.Error.UnknownProperty`.
    UnknownProperty(String),
    /// `org.freedesktop.DBus.Error.PropertyReadOnly`.
    PropertyReadOnly(String),
    /// `org.evsec.EvseSecurity1.Error.Internal`.
    Internal(String),
    /// An error of the bus connection itself.
    ZBus(zbus::Error),
}

impl BusError {
    fn error_name(&self) -> String {
        match self {
            BusError::InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs".to_owned(),
            BusError::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied".to_owned(),
            BusError::LimitsExceeded(_) => "org.freedesktop.DBus.Error.LimitsExceeded".to_owned(),
            BusError::UnknownInterface(_) => {
                "org.freedesktop.DBus.Error.UnknownInterface".to_owned()
            }
            BusError::UnknownProperty(_) => "org.freedesktop.DBus.Error.UnknownProperty".to_owned(),
            BusError::PropertyReadOnly(_) => {
                "org.freedesktop.DBus.Error.PropertyReadOnly".to_owned()
            }
            BusError::Internal(_) => format!("{ERROR_PREFIX}.Internal"),
            BusError::ZBus(zbus::Error::MethodError(name, _, _)) => name.to_string(),
            BusError::ZBus(_) => "org.freedesktop.DBus.Error.Failed".to_owned(),
        }
    }

    fn message(&self) -> String {
        match self {
            BusError::ZBus(e) => e.to_string(),
            _ => self.description().unwrap_or_default().to_owned(),
        }
    }
}

impl DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        zbus::message::Message::error(call, self.error_name()).build(&(self.message(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_string_unchecked(self.error_name())
    }

    fn description(&self) -> Option<&str> {
        match self {
            BusError::InvalidArgs(m)
            | BusError::AccessDenied(m)
            | BusError::LimitsExceeded(m)
            | BusError::UnknownInterface(m)
            | BusError::UnknownProperty(m)
            | BusError::PropertyReadOnly(m)
            | BusError::Internal(m) => Some(m),
            BusError::ZBus(_) => None,
        }
    }
}

impl From<zbus::Error> for BusError {
    fn from(e: zbus::Error) -> Self {
        BusError::ZBus(e)
    }
}

impl From<security::Error> for BusError {
    fn from(e: security::Error) -> Self {
        match e {
            security::Error::InvalidArgs(m) => BusError::InvalidArgs(m),
            security::Error::Internal(m) => BusError::Internal(m),
        }
    }
}
