//! The [`Caller`] extractor: the principal behind a request's
//! `Authorization: Bearer` token, and the checks handlers make with it.

use super::ApiError;
use crate::core::{Core, Principal};
use crate::error::{CoreError, CoreResult};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use osprey_shared::api::Role;
use osprey_shared::{JobId, PipelineId};
use std::net::IpAddr;

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

/// The peer's address, as tonic's server records it for each connection.
pub(super) fn peer(parts: &Parts) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(info) = parts.extensions.get::<TcpConnectInfo>() {
        return info.remote_addr().map(|addr| addr.ip());
    }
    parts
        .extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .map(|addr| addr.ip())
}

/// The bearer token of a request's headers, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<Core> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, core: &Core) -> Result<Self, Self::Rejection> {
        let principal = core
            .authenticate(bearer(&parts.headers), peer(parts))
            .await?;
        Ok(Caller(principal))
    }
}

impl Caller {
    pub fn require(&self, role: Role, project: Option<i64>) -> CoreResult<()> {
        self.0.require(role, project)
    }

    /// A pipeline's project must be the caller's (a pipeline of no project
    /// is an admin's); a pipeline the caller may not see is "not found".
    pub async fn require_pipeline(
        &self,
        core: &Core,
        role: Role,
        id: PipelineId,
    ) -> CoreResult<()> {
        let pipeline = core
            .store()
            .pipeline_without_jobs(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("pipeline {id} not found")))?;
        self.guard(role, pipeline.project_id)
    }

    pub async fn require_job(&self, core: &Core, role: Role, id: JobId) -> CoreResult<()> {
        let job = core
            .store()
            .job(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        let pipeline = core
            .store()
            .pipeline_without_jobs(job.pipeline_id())
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("job {id} not found")))?;
        self.guard(role, pipeline.project_id)
    }

    fn guard(&self, role: Role, project: Option<i64>) -> CoreResult<()> {
        self.0.require(role, project)
    }
}
