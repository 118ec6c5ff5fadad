//! Phone numbers in international format: digits only, no leading `+`, 8 to 15 digits.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("digits only, no leading +")]
    NotDigits,
    #[error("must have 8 to 15 digits")]
    Length,
    #[error("must not start with 0 (international format, country code first)")]
    LeadingZero,
}

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits);
        }
        if !(8..=15).contains(&s.len()) {
            return Err(PhoneError::Length);
        }
        if s.starts_with('0') {
            return Err(PhoneError::LeadingZero);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.0)
    }
}

impl TryFrom<String> for Phone {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, PhoneError> {
        Self::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_international_digits() {
        assert_eq!(Phone::parse("628123456789").unwrap().as_str(), "628123456789");
        assert!(Phone::parse("12345678").is_ok());
        assert!(Phone::parse("123456789012345").is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Phone::parse("+628123456789"), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse("62 812 3456"), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse(""), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse("1234567"), Err(PhoneError::Length));
        assert_eq!(Phone::parse("1234567890123456"), Err(PhoneError::Length));
        assert_eq!(Phone::parse("0812345678"), Err(PhoneError::LeadingZero));
        assert_eq!(Phone::parse("６２８１２３４５６７８"), Err(PhoneError::NotDigits));
    }
}
