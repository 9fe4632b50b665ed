//! Unauthenticated routes for booting machines (reference 10.5), on every HTTP(S) listener:
//!
//! - `/confluent-public/<path>`: files under `lib/public` (profiles under `os/`), ranges and
//!   ETags, symlinks followed only into `lib/public` and `lib/distributions`;
//! - `/boot/{by-mac,by-uuid,by-node}/<id>/<file>` (also under `/confluent-api/`): `boot.ipxe`
//!   and `grub.cfg` rendered for the node's pending profile (or a script that exits to the local
//!   disk), `x86_64.efi`/`aarch64.efi` (the iPXE loader handed to UEFI HTTP boot),
//!   `shimx64.efi`/`grubx64.efi` and `shimaa64.efi`/`grubaa64.efi` (the Secure Boot chain for
//!   profiles with `bootloader: shim`; shim fetches GRUB from its own directory), `boot.img`
//!   (the pending `bootloader: shim` profile's disk image for UEFI HTTP boot, holding shim,
//!   GRUB, its configuration, kernel and initramfs: [`crate::boot::image`]), and any other
//!   file redirected into the pending profile's directory;
//! - `/boot/su/<id>[/<name>]`: the short URLs the DHCP service hands out for long names.
//!
//! Nothing here needs a session: these URLs reveal only what a booting machine must fetch.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::files::{self, plain};
use super::{ClientAddress, Context};
use crate::boot::{Identity, scripts};
use crate::eventlog::Event;
use crate::eventlog::domain::{BootServed, DomainEvent};
use crate::osimage::profile;

/// The boot routes; `secure` says whether this listener is HTTPS (for the URLs in scripts).
pub fn routes(secure: bool) -> Router<Context> {
    let by_identity = move |state: State<Context>,
                            path: Path<(String, String, String)>,
                            method: Method,
                            headers: HeaderMap,
                            client: Option<Extension<ClientAddress>>| {
        by_identity(state, path, method, headers, client, secure)
    };
    Router::new()
        .route("/confluent-public/{*path}", get(public_file))
        .route("/boot/su/{id}", get(short_link))
        .route("/boot/su/{id}/{*name}", get(short_link_named))
        .route("/boot/{kind}/{id}/{*file}", get(by_identity))
        .route("/confluent-api/boot/{kind}/{id}/{*file}", get(by_identity))
}

/// A rendered boot script, counted with the boot files.
fn script(context: &Context, text: String) -> Response {
    let counters = &context.api.metrics.http_boot;
    counters.scripts.inc();
    counters.bytes_http.inc_by(text.len() as u64);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target"),
    }
}

/// The `Host` the client used, if it is a plausible `host[:port]`.
fn request_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']' | '_'));
    plausible.then_some(host)
}

/// Report the boot phase a request stands for (by its file name) to the boot phase metrics.
fn reached(context: &Context, client: Option<&Extension<ClientAddress>>, path: &str) {
    if let (Some(Extension(ClientAddress(client))), Some(phase)) =
        (client, crate::deploy::phase::of_file(path))
    {
        context
            .api
            .metrics
            .boot_phases
            .reached(*client, phase, std::time::Instant::now());
    }
}

async fn public_file(
    State(context): State<Context>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
    client: Option<Extension<ClientAddress>>,
) -> Response {
    reached(&context, client.as_ref(), &path);
    let boot = &context.boot;
    files::serve(
        &boot.public,
        &path,
        &context.file_cache,
        &method,
        &headers,
        &context.api.metrics.http_boot,
    )
    .await
}

async fn short_link(State(context): State<Context>, Path(id): Path<String>) -> Response {
    match context.boot.short_links.get(&id) {
        Some(target) => redirect(&target),
        None => plain(StatusCode::NOT_FOUND, "unknown or expired short link"),
    }
}

async fn short_link_named(
    state: State<Context>,
    Path((id, _name)): Path<(String, String)>,
) -> Response {
    short_link(state, Path(id)).await
}

/// The boot loader (under the TFTP root) a UEFI HTTP boot URL names: iPXE as `x86_64.efi` /
/// `aarch64.efi`, and the Secure Boot chain, shim and the GRUB that shim fetches from the same
/// directory as itself.
fn http_boot_loader(file: &str) -> Option<&'static str> {
    Some(match file {
        "x86_64.efi" => "x86_64/ipxe.efi",
        "aarch64.efi" => "aarch64/ipxe.efi",
        "shimx64.efi" => "x86_64/shimx64.efi",
        "grubx64.efi" => "x86_64/grubx64.efi",
        "shimaa64.efi" => "aarch64/shimaa64.efi",
        "grubaa64.efi" => "aarch64/grubaa64.efi",
        _ => return None,
    })
}

/// Files shim 16 fetches from its own directory when they exist; this server has none.
const SHIM_OPTIONAL_FILES: &[&str] = &[
    "revocations_sku.efi",
    "revocations_sbat.efi",
    "shim_certificate_0.efi",
];

/// The name under which a node's pending profile's disk image is served.
const BOOT_IMAGE: &str = "boot.img";

/// `boot.img` of the node's pending profile, built (or rebuilt) first if needed. Served as
/// `application/vnd.efi-img`, which tells UEFI HTTP boot to mount it as a RAM disk.
async fn boot_image(
    context: &Context,
    node: &str,
    profile: &str,
    method: &Method,
    headers: &HeaderMap,
    outcome: impl Fn(&str) -> BootServed,
) -> Response {
    let images = &context.boot.images;
    match images.ensure(profile).await {
        Ok(file_name) => {
            record(context, Some(node), outcome("boot image"));
            files::serve(
                images.root(),
                &file_name,
                &context.file_cache,
                method,
                headers,
                &context.api.metrics.http_boot,
            )
            .await
        }
        Err(error) => {
            // The whole chain (server paths, OS errors) goes to the event and the log; the
            // booting machine only learns what is missing.
            let reason = crate::error::Chain(&error).to_string();
            record(context, Some(node), outcome(&reason));
            if error.is_not_found() {
                plain(
                    StatusCode::NOT_FOUND,
                    format!("{node}: {}", error.client_message()),
                )
            } else {
                tracing::warn!(node, profile, error = %reason, "boot image failed");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{node}: the boot image of profile {profile} could not be built"),
                )
            }
        }
    }
}

/// Record what a booting machine was given, for "why did node X not boot?".
fn record(context: &Context, node: Option<&str>, served: BootServed) {
    let mut event = Event::from(DomainEvent::BootHttp(served));
    if let Some(node) = node {
        event = event.node(node);
    }
    // Never blocks; a full queue is counted by the log itself.
    let _ = context.api.events.events.append(event);
}

async fn by_identity(
    State(context): State<Context>,
    Path((kind, id, file)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    client: Option<Extension<ClientAddress>>,
    secure: bool,
) -> Response {
    let Some(identity) = Identity::parse(&kind, &id) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{kind}/{id}: expected by-mac/<mac>, by-uuid/<uuid> or by-node/<node>"),
        );
    };
    // Shim asks for `<its directory>//grubx64.efi` (it appends `/grubx64.efi` to a directory
    // that ends in `/`): read empty components as nothing.
    let file = file.trim_start_matches('/');
    reached(&context, client.as_ref(), file);
    let boot = &context.boot;
    // The EFI loaders for UEFI HTTP boot: the same for every machine.
    if let Some(loader) = http_boot_loader(file) {
        return files::serve(
            &boot.loaders,
            loader,
            &context.file_cache,
            &method,
            &headers,
            &context.api.metrics.http_boot,
        )
        .await;
    }
    // Optional files shim looks for next to itself (SBAT and SKU revocations, an extra
    // certificate). Answered at once: a redirect leaves shim waiting for the connection to
    // close (30 s each, seen with Debian's shim 16.1 under OVMF).
    if SHIM_OPTIONAL_FILES.contains(&file) {
        return plain(StatusCode::NOT_FOUND, format!("{file}: not provided"));
    }
    let Some(node) = boot.identify(&identity).await else {
        record(
            &context,
            None,
            BootServed::unknown_machine(format!("{kind}/{id}/{file}")),
        );
        return plain(
            StatusCode::NOT_FOUND,
            format!("{kind}/{id}: unknown machine"),
        );
    };
    let Some(host) = request_host(&headers) else {
        return plain(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    let scheme = if secure { "https" } else { "http" };
    let pending = node.pending_profile.clone();
    let outcome =
        |text: &str| BootServed::for_node(format!("{kind}/{id}/{file}"), pending.as_deref(), text);
    let Some(profile_name) = pending.as_deref() else {
        let body = match file {
            "boot.ipxe" => scripts::ipxe_local(&node.name),
            "grub.cfg" => scripts::grub_local(&node.name),
            _ => {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("{}: no deployment pending", node.name),
                );
            }
        };
        record(&context, Some(&node.name), outcome("local boot"));
        return script(&context, body);
    };
    if file == BOOT_IMAGE {
        return boot_image(
            &context,
            &node.name,
            profile_name,
            &method,
            &headers,
            outcome,
        )
        .await;
    }
    if !matches!(file, "boot.ipxe" | "grub.cfg") {
        // Anything else lives in the profile (reference 10.5: by-* redirects into it).
        return redirect(&format!(
            "{}/{file}",
            scripts::profile_url(&format!("{scheme}://{host}"), profile_name)
        ));
    }
    let loaded = {
        let profiles = boot.profiles();
        let name = profile_name.to_string();
        tokio::task::spawn_blocking(move || profile::load(&profiles, &name)).await
    };
    let profile = match loaded {
        Ok(Ok(profile)) => profile,
        Ok(Err(error)) => {
            record(
                &context,
                Some(&node.name),
                outcome(&crate::error::Chain(&error).to_string()),
            );
            return plain(
                StatusCode::NOT_FOUND,
                format!("{}: {}", node.name, error.client_message()),
            );
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "profile loader failed"),
    };
    let body = if file == "boot.ipxe" {
        scripts::ipxe(&profile, &node.name, &format!("{scheme}://{host}"))
    } else {
        scripts::grub(&profile, host, secure)
    };
    record(&context, Some(&node.name), outcome("boot script"));
    script(&context, body)
}
