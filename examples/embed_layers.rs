//! scopegate's identify and authorise layers in front of a hyper service of your own.
//!
//! ```sh
//! cargo run --example embed_layers
//! ```
//!
//! It prints its address and `curl` lines, and stops on Ctrl-C or after two minutes. The config has
//! two API tokens (`reader` holds `operator.read`, `writer` holds `operator.write`), a route `/hello`
//! that requires `operator.write` and a public route `/health`; every other path is denied by the
//! default route. The handler runs only for requests the gate let through, and reads who is calling
//! from the `Authorised` extension. `tests/embed_layers.rs` runs this same [`serve`] over real sockets.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use scopegate::identity::api_token::sha256_hex;
use scopegate::proxy::embed::{Authorised, Gate, Peer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

pub const READER_TOKEN: &str = "sg_embed_reader";
pub const WRITER_TOKEN: &str = "sg_embed_writer";

/// The sidecar's own config format; only the hashes of the tokens are in it.
pub fn config() -> String {
    format!(
        r#"
# Required by the config contract; an embedded gate forwards nothing, so it is never contacted.
[upstream]
url = "http://127.0.0.1:9"
profile = "generic"

[[api_tokens]]
subject = "reader"
sha256 = "{reader}"
scopes = ["operator.read"]

[[api_tokens]]
subject = "writer"
sha256 = "{writer}"
scopes = ["operator.write"]

[[routes]]
path = "/hello"
require = ["operator.write"]

[[routes]]
path = "/health"
public = true
"#,
        reader = sha256_hex(READER_TOKEN.as_bytes()),
        writer = sha256_hex(WRITER_TOKEN.as_bytes()),
    )
}

/// Your own service. It never sees a refused request; `calls` counts the requests it did see.
pub async fn hello(
    req: Request<Incoming>,
    calls: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    calls.fetch_add(1, Ordering::SeqCst);
    let Some(auth) = req.extensions().get::<Authorised>() else {
        let mut resp = Response::new(Full::from(
            "no Authorised extension: the gate is not in front of this service\n",
        ));
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(resp);
    };
    let scopes = auth.scopes();
    let scopes = if scopes.is_empty() {
        "no scopes".to_string()
    } else {
        scopes.join(" ")
    };
    let subject = auth.subject().unwrap_or("anonymous");
    Ok(Response::new(Full::from(format!(
        "hello {subject}, you have {scopes}\n"
    ))))
}

/// Serves `listener` with `gate` in front of [`hello`] until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gate: Gate,
    calls: Arc<AtomicUsize>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let calls = calls.clone();
        let svc = ServiceBuilder::new()
            // The gate's trust decisions need the peer: hand it over with each request.
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                req
            })
            .layer(gate.clone())
            .service_fn(move |req| hello(req, calls.clone()));
        tokio::spawn(async move {
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await;
            if let Err(e) = served {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gate = Gate::from_toml(&config())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("serving on {url} (Ctrl-C to stop; stops by itself after 2 minutes)");
    println!("  curl -i {url}/hello                                          # 401: no credential");
    println!("  curl -i {url}/hello -H 'Authorization: Bearer {READER_TOKEN}'  # 403: missing scope: operator.write");
    println!(
        "  curl -i {url}/hello -H 'Authorization: Bearer {WRITER_TOKEN}'  # 200: hello writer, …"
    );
    println!("  curl -i {url}/health                                         # 200: public");
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = tokio::time::sleep(Duration::from_secs(120)) => {}
        }
    };
    serve(listener, gate, calls.clone(), stop).await;
    println!(
        "stopped; the handler ran {} times",
        calls.load(Ordering::SeqCst)
    );
    Ok(())
}
