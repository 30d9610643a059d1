//! `shop api`: the HTTP API.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /products/{id}` | the product, through the `products` cache (moka over Redis) whose loader reads objstore `products/{id}` |
//! | `PUT /products/{id}` | writes the product to objstore and invalidates the cache entry |
//! | `POST /orders` | reserves stock on the inventory service (gRPC), stores the order in Redis (`order:{n}`, numbered by `orders:seq`) and its receipt in objstore (`orders/{n}`) |
//! | `GET /orders/{id}` | the order, from Redis |
//!
//! Errors: 400 for bad input, 404 for what does not exist, 403 when shadow traffic is refused
//! (the switch is `off`, or `watch` and the request writes), 502 when a backend fails.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cache::{Cache, RedisL2};
use jupiter_core::app::{App, component_fn};
use jupiter_core::logging::LogHandle;
use jupiter_core::registry::grpc::BalancedChannel;
use jupiter_core::registry::{self, RegistryConfig, RegistryKind, ServiceInfo, Target};
use jupiter_core::shadow::{ShadowLayer, ShadowSwitch};
use jupiter_core::{Config, Metrics, say};
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;

use crate::BoxError;
use crate::pb::ReserveRequest;
use crate::pb::inventory_client::InventoryClient;

/// Longest id (product or order) accepted in a path.
const MAX_ID: usize = 64;

/// The `[api]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ApiConfig {
    listen: SocketAddr,
    objstore: String,
    inventory_service: String,
    inventory_address: String,
}

/// A product, as stored in objstore (JSON) and cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Product {
    name: String,
    price_cents: u64,
}

/// An order, as placed (`POST /orders`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    sku: String,
    quantity: u32,
}

/// An order, as stored in Redis and answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    sku: String,
    quantity: u32,
    /// How many of the SKU were reserved in all after this order.
    reserved: i64,
}

/// Writes the caller's shadow tag onto each inventory call ([`jupiter_core::shadow::inject_grpc`]).
type Injector = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Inventory = InventoryClient<InterceptedService<BalancedChannel, Injector>>;

struct Shop {
    redis: redis_client::Client,
    objstore: objstore::client::Client,
    products: Cache<String, Product>,
    inventory: Inventory,
}

/// A failed request: its status and a one-line message.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<redis_client::Error> for Failure {
    fn from(e: redis_client::Error) -> Self {
        match e {
            redis_client::Error::ShadowRefused(r) => Failure(StatusCode::FORBIDDEN, r.to_string()),
            e => Failure(StatusCode::BAD_GATEWAY, format!("redis: {e}")),
        }
    }
}

impl From<objstore::Error> for Failure {
    fn from(e: objstore::Error) -> Self {
        Failure::from(&e)
    }
}

impl From<&objstore::Error> for Failure {
    fn from(e: &objstore::Error) -> Self {
        match e {
            objstore::Error::Refused(m) => Failure(StatusCode::FORBIDDEN, m.clone()),
            e => Failure(StatusCode::BAD_GATEWAY, format!("objstore: {e}")),
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        Failure(code, format!("inventory: {}", s.message()))
    }
}

fn check_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("an id is 1 to {MAX_ID} printable ASCII characters"),
        ));
    }
    Ok(())
}

async fn get_product(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Json<Product>, Failure> {
    check_id(&id)?;
    let objstore = shop.objstore.clone();
    let key = format!("products/{id}");
    // The loader runs in a task of its own (single flight): it keeps the caller's shadow tag,
    // so a shadow miss loads from objstore's shadow namespace.
    let loaded = shop
        .products
        .try_get_or_load(&id, move || async move {
            match objstore.get(key.as_bytes()).await? {
                Some(o) => serde_json::from_slice(&o.value)
                    .map(Some)
                    .map_err(|e| objstore::Error::Invalid(format!("stored product: {e}"))),
                None => Ok(None),
            }
        })
        .await;
    match loaded {
        Ok(Some(p)) => Ok(Json(p)),
        Ok(None) => Err(Failure(StatusCode::NOT_FOUND, format!("no product {id}"))),
        Err(cache::LoadError::Load(e)) => Err(Failure::from(&*e)),
        Err(e) => Err(Failure(
            StatusCode::BAD_GATEWAY,
            format!("product cache: {e}"),
        )),
    }
}

async fn put_product(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
    Json(product): Json<Product>,
) -> Result<StatusCode, Failure> {
    check_id(&id)?;
    let value = Bytes::from(
        serde_json::to_vec(&product)
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}")))?,
    );
    shop.objstore
        .put(
            format!("products/{id}").as_bytes(),
            value,
            Default::default(),
        )
        .await?;
    shop.products
        .invalidate(&id)
        .await
        .map_err(|e| Failure(StatusCode::BAD_GATEWAY, format!("product cache: {e}")))?;
    tracing::info!(product = %id, "product stored");
    Ok(StatusCode::NO_CONTENT)
}

async fn place_order(
    State(shop): State<Arc<Shop>>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<Order>), Failure> {
    check_id(&order.sku)?;
    let reserved = shop
        .inventory
        .clone()
        .reserve(ReserveRequest {
            sku: order.sku.clone(),
            quantity: order.quantity,
        })
        .await?
        .into_inner()
        .reserved;
    let n: i64 = shop.redis.incr("orders:seq").await?;
    let id = u64::try_from(n).map_err(|_| {
        Failure(
            StatusCode::BAD_GATEWAY,
            format!("orders:seq is {n}, not an order number"),
        )
    })?;
    let placed = Order {
        id,
        sku: order.sku,
        quantity: order.quantity,
        reserved,
    };
    let json = serde_json::to_vec(&placed)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}")))?;
    shop.redis
        .set(format!("order:{id}"), json.as_slice())
        .await?;
    shop.objstore
        .put(
            format!("orders/{id}").as_bytes(),
            Bytes::from(json),
            Default::default(),
        )
        .await?;
    // In a shadow request this line carries the run id (the shadow span).
    tracing::info!(order = id, sku = %placed.sku, "order placed");
    Ok((StatusCode::CREATED, Json(placed)))
}

async fn get_order(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    check_id(&id)?;
    let stored: Option<Bytes> = shop.redis.get(format!("order:{id}")).await?;
    match stored {
        Some(json) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()),
        None => Err(Failure(StatusCode::NOT_FOUND, format!("no order {id}"))),
    }
}

/// The inventory service's instances: discovered in the registry (etcd), or the configured
/// address with the in-process registry.
async fn inventory_instances(
    section: &ApiConfig,
    registry_config: &RegistryConfig,
    registry: &Arc<dyn registry::Registry>,
    mode: &str,
) -> Result<tokio::sync::watch::Receiver<registry::Instances>, BoxError> {
    if registry_config.kind == RegistryKind::Etcd {
        let target = Target::new("grpc", section.inventory_service.clone(), mode.to_owned());
        return Ok(registry.discover(target).await?);
    }
    let one = ServiceInfo::new(
        section.inventory_service.clone(),
        "grpc",
        section.inventory_address.clone(),
    );
    // The set never changes: the channel keeps the one instance it starts with.
    let (_, rx) = tokio::sync::watch::channel(registry::Instances::from(vec![one]));
    Ok(rx)
}

/// Runs the API until SIGINT/SIGTERM.
pub(crate) async fn run(config: Config, log: LogHandle) -> Result<(), BoxError> {
    let section: ApiConfig = config.get("api")?;
    let app_config: jupiter_core::app::AppConfig = config.get("app")?;
    let registry_config: RegistryConfig = config.get("registry")?;
    let metrics = Metrics::global().clone();
    let redis = redis_client::Client::from_config(&config, "main").await?;
    let objstore = objstore::client::Client::connect_lazy(
        &section.objstore,
        objstore::client::ClientConfig::default(),
    )?;
    let products = Cache::from_config(&config, "products")?
        .l2(RedisL2::new(redis.clone()))
        .metrics(&metrics)
        .build()?;
    let registry = registry::from_config(&registry_config).await?;
    let instances =
        inventory_instances(&section, &registry_config, &registry, &app_config.mode).await?;
    let inventory = InventoryClient::with_interceptor(
        BalancedChannel::new(instances),
        jupiter_core::shadow::inject_grpc as Injector,
    );
    let shop = Arc::new(Shop {
        redis,
        objstore,
        products,
        inventory,
    });
    let shadow = ShadowLayer::new(
        &app_config.name,
        ShadowSwitch::from_config(&config)?,
        &metrics,
    );
    let router = axum::Router::new()
        .route("/products/{id}", get(get_product).put(put_product))
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .with_state(shop)
        .layer(shadow);
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (api.listen): {e}", section.listen))?;
    say!("api listening on http://{}", listener.local_addr()?);
    App::from_config(&config)?
        .build()
        .with_governance(|g| g.log(&log).registry(registry.clone()))
        .on_governance_bound(|a| say!("governance listening on http://{a}"))
        .component(component_fn("http", move |mut ctx| async move {
            ctx.ready();
            let stop = ctx.stop_token();
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .map_err(|e| Box::new(e) as BoxError)
        }))
        .run()
        .await?;
    Ok(())
}
