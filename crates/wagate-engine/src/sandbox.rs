pub trait SandboxControl: Send + Sync {}
