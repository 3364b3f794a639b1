"""The page's one script: click a table header to sort its rows (again: the other way round).

It is inline (the page stays one file) and the page's Content-Security-Policy allows exactly this script by
its SHA-256 (:func:`csp_source`), so any other script, inline or fetched, is still refused. A table with
several bodies or group rows (the example texts, where rows belong under their heading) is left as written.
Numbers sort as numbers (a thousands comma, a leading sign or a percent sign read as written; "1.2e-05"
too); a dash (no value) sorts last either way; any other text sorts alphabetically.
"""

from __future__ import annotations

import base64
import hashlib

SCRIPT = """(function () {
  function key(cell) {
    var s = cell ? cell.textContent.trim() : "";
    if (s === "" || s === "\\u2013") return null;
    var t = s.replace(/,/g, "").replace("\\u2212", "-").replace(/%$/, "");
    return /^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?$/i.test(t) ? parseFloat(t) : s.toLowerCase();
  }
  function compare(a, b) {
    if (a === null || b === null) return a === null ? (b === null ? 0 : 1) : -1;
    if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  document.querySelectorAll("table.data").forEach(function (table) {
    if (!table.tHead || table.tBodies.length !== 1 || table.querySelector("tr.group")) return;
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      th.classList.add("sortable");
      th.title = "sort by this column";
      th.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(head.cells, function (c) { c.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.map.call(body.rows, function (r, i) {
          return {row: r, key: key(r.cells[col]), i: i};
        });
        rows.sort(function (a, b) {
          if (a.key === null || b.key === null) return compare(a.key, b.key) || a.i - b.i;
          return (up ? compare(a.key, b.key) : compare(b.key, a.key)) || a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
  });
})();"""


def csp_source(script: str = SCRIPT) -> str:
    """The Content-Security-Policy source that allows ``script`` as the content of an inline <script>."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"
