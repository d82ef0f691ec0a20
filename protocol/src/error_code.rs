//! The shape shared by the wire's and the socket's error-code enums.
//!
//! A code is a snake_case string on the wire; in code it is an enum, so
//! that what is sent and what is matched cannot drift apart by a typo.
//! Each enum keeps an `Other(String)` fallback: a newer peer may send a
//! code this build does not know, and the frame must still parse (the
//! code is then carried through unchanged).

/// Defines an error-code enum: its variants with their wire strings, an
/// `Other(String)` fallback, string conversions both ways, serde as the
/// plain string, and comparison with `&str` (so that `code == "malformed"`
/// reads as before in tests).
macro_rules! error_codes {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code this build does not know, as it was sent. Never holds
            /// a known code: parsing always picks the named variant.
            Other(String),
        }

        impl $name {
            /// Every named variant (not [`Self::Other`]).
            pub const KNOWN: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The snake_case string sent on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Other(code) => code,
                }
            }

            /// The code a string names; an unknown one is kept in
            /// [`Self::Other`].
            pub fn parse(code: &str) -> Self {
                match code {
                    $( $text => Self::$variant, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl From<&str> for $name {
            fn from(code: &str) -> Self {
                Self::parse(code)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let code = String::deserialize(deserializer)?;
                Ok(Self::parse(&code))
            }
        }
    };
}

pub(crate) use error_codes;
