//! [`BearerAuth`]: optional bearer-token check on the Decoder service
//! (`authorization: Bearer <token>`). Health and reflection stay open for probes.

use tonic::{Request, Status};

#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<std::sync::Arc<Vec<u8>>>,
}

impl BearerAuth {
    pub fn new(token: Option<String>) -> Self {
        Self { expected: token.map(|t| std::sync::Arc::new(format!("Bearer {}", t.trim()).into_bytes())) }
    }

    /// Reads a token from a file (first line), as deployments keep secrets in files.
    pub fn from_file(path: &std::path::Path) -> Result<String, String> {
        let t = std::fs::read_to_string(path).map_err(|e| format!("reading token file {}: {e}", path.display()))?;
        let t = t.lines().next().unwrap_or("").trim().to_string();
        if t.is_empty() {
            return Err(format!("token file {} is empty", path.display()));
        }
        Ok(t)
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(req) };
        match req.metadata().get("authorization") {
            Some(v) if same(v.as_bytes(), expected) => Ok(req),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated("missing 'authorization: Bearer <token>' metadata")),
        }
    }
}
