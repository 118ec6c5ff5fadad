//! Authentication: API keys and login JWTs, turned into a [`wagate_core::Principal`].
