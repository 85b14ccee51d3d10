"""The gallery of one FRC night (no Airflow import): the quicklooks the night's batch lists on
the archive, and the sunspots the catalogue holds for each, drawn on the image.

* :func:`quicklooks` reads the observations of the night with their features (``hfc.sunspots``:
  position, Freeman chain code of the contour);
* :func:`quicklook_path` is the only way a quicklook's name, as a browser gives it, becomes a
  path on the archive: it must be a quicklook listed in the night's batch;
* :func:`draw_features` draws the contours (or a cross at each position) on the image.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hfc_tasks import products

# Freeman chain-code steps in the image frame of the FRC (+x west, +y north): 0=E ... 7=SE.
CC_DX = (1, 1, 0, -1, -1, -1, 0, 1)
CC_DY = (0, 1, 1, 1, 0, -1, -1, -1)


@dataclass
class Feature:
    x: int  # feature centre, pixel of the FRC's image (FITS-like: row 0 at the bottom)
    y: int
    cc_x: int | None = None  # chain code start
    cc_y: int | None = None
    cc: str | None = None

    def contour(self) -> list[tuple[int, int]]:
        if self.cc_x is None or self.cc_y is None or not self.cc:
            return []
        pts = [(self.cc_x, self.cc_y)]
        for ch in self.cc:
            if ch.isdigit() and int(ch) < 8:
                x, y = pts[-1]
                pts.append((x + CC_DX[int(ch)], y + CC_DY[int(ch)]))
        return pts


@dataclass
class Quicklook:
    name: str
    archive_path: str
    date_obs: str
    naxis1: int | None
    naxis2: int | None
    features: list[Feature] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = len(self.features)
        d["contours"] = sum(1 for f in self.features if f.cc)
        return d


def quicklooks(conn, frc: str, night: dt.date) -> list[Quicklook]:
    """The quicklooks of one FRC night (archive path from the batch's files) and the sunspots
    the catalogue holds for each observation."""
    obs = conn.execute(
        """
        select o.id_observations, o.qclk_fname, f.archive_path, o.date_obs, o.naxis1, o.naxis2
        from hfc.observations o
        join hfc.batch b on b.id = o.batch_id
        join hfc.batch_file f on f.batch_id = b.id and f.name = o.qclk_fname and f.kind = 'quicklook'
        where b.frc = %s and b.night = %s
        order by o.date_obs, o.qclk_fname
        """,
        (frc, night),
    ).fetchall()
    out: dict[int, Quicklook] = {}
    for oid, name, path, date_obs, n1, n2 in obs:
        out[oid] = Quicklook(name=name, archive_path=path, date_obs=date_obs.isoformat(), naxis1=n1, naxis2=n2)
    if out:
        for oid, x, y, cx, cy, cc in conn.execute(
            "select observations_id_ic, feat_x_pix, feat_y_pix, cc_x_pix, cc_y_pix, cc from hfc.sunspots "
            "where observations_id_ic = any(%s) order by id_sunspot",
            (list(out),),
        ):
            out[oid].features.append(Feature(x=x, y=y, cc_x=cx, cc_y=cy, cc=cc))
    return list(out.values())


def quicklook_path(conn, frc: str, night: dt.date, name: str) -> str | None:
    """The archive path of a quicklook *listed in the night's batch* (None otherwise): the only
    files the page ever reads from the archive, so no path given by a browser reaches SFTP."""
    products.check_plain_name(name)
    row = conn.execute(
        "select f.archive_path from hfc.batch_file f join hfc.batch b on b.id = f.batch_id "
        "where b.frc = %s and b.night = %s and f.name = %s and f.kind = 'quicklook'",
        (frc, night, name),
    ).fetchone()
    return row[0] if row else None


def draw_features(image: bytes, features: Sequence[Feature], naxis1: int | None, naxis2: int | None) -> bytes:
    """The quicklook as PNG with the contours (chain codes) drawn in red, or a cross at each
    feature's position where there is no contour.

    Pixel coordinates of the catalogue are those of the FRC's full image (``naxis1 x naxis2``,
    FITS-like: row 0 at the bottom, solar north up); the quicklook may be smaller and is shown
    north up, so x is scaled and y scaled and flipped.
    """
    from PIL import Image, ImageDraw

    img = Image.open(io.BytesIO(image)).convert("RGB")
    w, h = img.size
    sx = w / (naxis1 or w)
    sy = h / (naxis2 or h)

    def to_img(x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) * sx, h - (y + 0.5) * sy

    draw = ImageDraw.Draw(img)
    for feat in features:
        contour = feat.contour()
        if len(contour) > 1:
            draw.line([to_img(x, y) for x, y in contour] + [to_img(*contour[0])], fill=(255, 40, 40), width=1)
        else:
            cx, cy = to_img(feat.x, feat.y)
            r = max(3, int(4 * max(sx, sy)))
            draw.line([(cx - r, cy), (cx + r, cy)], fill=(255, 200, 0), width=1)
            draw.line([(cx, cy - r), (cx, cy + r)], fill=(255, 200, 0), width=1)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
