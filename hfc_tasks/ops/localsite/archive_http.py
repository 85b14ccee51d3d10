"""The archive's web server on the local site: Debian's nginx, on 127.0.0.1 only, serving the
archive tree read-only under ``/hfc/`` (``Layout.archive_http_url``, the local registry's
``public_url_base``).

The HFC's own clients open archived files by URL: pyhfc and its viewer open ``QCLK_URL + '/' +
QCLK_FNAME`` with ``urlopen`` (http, https or ftp), which a ``file://`` base would not give them;
the demo tracker reads its detector's published results the same way. The workers run as
``www-data``, which can read the tree (its folders and files are world-readable, as a public
archive's) and write none of it; only GET and HEAD are served, copies in progress (``<name>.part``)
and dot files are not, and a link never leads out of the tree.
"""

from __future__ import annotations

import os
from importlib import resources
from string import Template

from ._util import (
    SiteError,
    clear_stale_pid,
    ensure_dir,
    pidfile_alive,
    port_open,
    read_pid,
    run,
    stop_pid,
    wait_for,
    write_file,
)
from .layout import Layout

NGINX = "/usr/sbin/nginx"
PACKAGE = "nginx"


def running(lay: Layout) -> bool:
    return pidfile_alive(lay.nginx_pid, "nginx")


def render_config(lay: Layout) -> str:
    tmpl = Template(resources.files(__package__).joinpath("templates/nginx.conf").read_text())
    return tmpl.substitute(
        port=lay.archive_http_port,
        pid_file=lay.nginx_pid,
        error_log=lay.nginx_log,
        access_log=lay.nginx_access_log,
        temp_dir=lay.nginx_dir / "tmp",
        # nginx checks the links of the path below this prefix: give it the real folders.
        archive_root=os.path.realpath(lay.archive_root),
    )


def _command(lay: Layout, *args: str) -> list[str]:
    # -e: the error log from the first line, before nginx reads its configuration (else it tries
    # Debian's /var/log/nginx/error.log); -p: its prefix, for any relative path.
    return [NGINX, "-e", str(lay.nginx_log), "-p", f"{lay.nginx_dir}/", "-c", str(lay.nginx_conf), *args]


def up(lay: Layout, log=print) -> None:
    ensure_dir(lay.nginx_dir, "root", 0o755)
    ensure_dir(lay.nginx_dir / "tmp", "root", 0o755)
    ensure_dir(lay.log_dir, "root", 0o755)
    if not lay.archive_root.is_dir():
        raise SiteError(f"archive web server: no archive tree at {lay.archive_root} (sshd prepares it)")
    changed = write_file(lay.nginx_conf, render_config(lay), "root", 0o644)
    if running(lay) and changed:
        log("nginx: configuration changed, reloading")
        run(_command(lay, "-t", "-q"), what="nginx: config check (nginx -t)", log=lay.nginx_log)
        os.kill(read_pid(lay.nginx_pid), 1)  # SIGHUP: new workers with the new configuration
    if running(lay):
        return
    log(f"nginx: starting (the archive over HTTP: {lay.archive_http_url}/)")
    clear_stale_pid(lay.nginx_pid, "nginx")
    run(_command(lay, "-t", "-q"), what="nginx: config check (nginx -t)", log=lay.nginx_log)
    # nginx daemonises itself (the master writes its pid file, then forks its workers).
    run(_command(lay), what="nginx: start", log=lay.nginx_log)
    if not wait_for(lambda: running(lay) and port_open(lay.archive_http_port), 10):
        raise SiteError(f"nginx did not start listening on 127.0.0.1:{lay.archive_http_port}; "
                        f"read the log: {lay.nginx_log}")


def stop(lay: Layout) -> bool:
    return stop_pid(lay.nginx_pid, "nginx")
