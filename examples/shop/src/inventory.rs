//! `shop inventory`: stock reservations over gRPC, counted in Redis.
//!
//! Wiring, all from jupiter-core: the `[inventory]` section, a redis-client from
//! `[redis.main]`, the shadow switch and layer in front of the tonic server, registration in
//! the registry once serving (deregistered first at shutdown), governance on its own port.

use std::net::SocketAddr;

use jupiter_core::app::{App, component_fn};
use jupiter_core::logging::LogHandle;
use jupiter_core::registry::{self, RegistryConfig, ServiceInfo, ServiceKind, ServiceRegistrar};
use jupiter_core::shadow::{ShadowLayer, ShadowSwitch};
use jupiter_core::{Config, Metrics, say};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::BoxError;
use crate::pb::inventory_server::{Inventory, InventoryServer};
use crate::pb::{ReserveReply, ReserveRequest, ReservedRequest};

/// Longest SKU accepted.
const MAX_SKU: usize = 64;
/// Most units one reservation may take.
const MAX_QUANTITY: u32 = 1000;

/// The `[inventory]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct InventoryConfig {
    listen: SocketAddr,
}

/// The service: reservations are `reserved:{sku}` counters.
struct Reservations {
    redis: redis_client::Client,
}

fn key(sku: &str) -> Result<String, Status> {
    if sku.is_empty() || sku.len() > MAX_SKU || !sku.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "sku must be 1 to {MAX_SKU} printable ASCII characters"
        )));
    }
    Ok(format!("reserved:{sku}"))
}

/// A Redis failure as a gRPC status: a shadow refusal is the caller's permission problem.
fn status(e: redis_client::Error) -> Status {
    match e {
        redis_client::Error::ShadowRefused(r) => Status::permission_denied(r.to_string()),
        e => Status::unavailable(format!("redis: {e}")),
    }
}

#[tonic::async_trait]
impl Inventory for Reservations {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveReply>, Status> {
        let r = request.into_inner();
        let key = key(&r.sku)?;
        if r.quantity == 0 || r.quantity > MAX_QUANTITY {
            return Err(Status::invalid_argument(format!(
                "quantity must be 1 to {MAX_QUANTITY}"
            )));
        }
        let reserved = self
            .redis
            .incr_by(key.as_str(), i64::from(r.quantity))
            .await
            .map_err(status)?;
        // Inside the shadow span for shadow requests: the line carries the run id.
        tracing::info!(sku = %r.sku, quantity = r.quantity, reserved, "reserved");
        Ok(Response::new(ReserveReply { reserved }))
    }

    async fn reserved(
        &self,
        request: Request<ReservedRequest>,
    ) -> Result<Response<ReserveReply>, Status> {
        let key = key(&request.into_inner().sku)?;
        let reserved: Option<i64> = self.redis.get(key.as_str()).await.map_err(status)?;
        Ok(Response::new(ReserveReply {
            reserved: reserved.unwrap_or(0),
        }))
    }
}

/// Runs the inventory service until SIGINT/SIGTERM.
pub(crate) async fn run(config: Config, log: LogHandle) -> Result<(), BoxError> {
    let section: InventoryConfig = config.get("inventory")?;
    let app_config: jupiter_core::app::AppConfig = config.get("app")?;
    let registry_config: RegistryConfig = config.get("registry")?;
    let metrics = Metrics::global().clone();
    let redis = redis_client::Client::from_config(&config, "main").await?;
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (inventory.listen): {e}",
                section.listen
            )
        })?;
    let addr = listener.local_addr()?;
    say!("inventory listening on grpc://{addr}");
    let registry = registry::from_config(&registry_config).await?;
    let registrar = ServiceRegistrar::new(
        registry.clone(),
        ServiceInfo::new(app_config.name.clone(), "grpc", addr.to_string())
            .mode(app_config.mode.clone())
            .kind(ServiceKind::Provider),
    );
    let shadow = ShadowLayer::new(
        &app_config.name,
        ShadowSwitch::from_config(&config)?,
        &metrics,
    );
    let service = InventoryServer::new(Reservations { redis });
    App::from_config(&config)?
        .build()
        .with_governance(|g| g.log(&log).registry(registry.clone()))
        .on_governance_bound(|a| say!("governance listening on http://{a}"))
        .registrar(registrar)
        .component(component_fn("grpc", move |mut ctx| async move {
            ctx.ready();
            let stop = ctx.stop_token();
            tonic::transport::Server::builder()
                .layer(shadow)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move { stop.cancelled().await },
                )
                .await
                .map_err(|e| Box::new(e) as BoxError)
        }))
        .run()
        .await?;
    Ok(())
}
