"""The dashboard's style sheet and its one small script, served inline with every page (nothing
is fetched from elsewhere; plant networks have no internet).

The script only adds conveniences: hide/show a machine's line from the legend, send the
acknowledgement form to ``POST /v1/alarms/{id}/ack`` as JSON, and reload the overview every
``data-refresh`` seconds unless someone is typing, listening or looking elsewhere. The range
control and every link work without it.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1d;
background:#f6f7f9;font-size:15px}
header{background:#263238;color:#fff;padding:.7em 2em}
header h1{font-size:1.3em;margin:0;display:inline}header a{color:#b3e5fc}
header .meta{color:#cfd8dc;font-size:.88em;margin-left:1em}
main{padding:.6em 2em 2em;max-width:1400px}
h2{font-size:1.12em;margin:1.4em 0 .5em}h3{font-size:1em;margin:.2em 0 .4em}
.muted{color:#666;font-size:.9em}.card{background:#fff;border:1px solid #dde1e6;
border-radius:6px;padding:.8em 1em;margin-bottom:1em}
table{border-collapse:collapse;font-size:.93em;background:#fff;width:100%}
th,td{padding:.35em .7em;text-align:left;border-bottom:1px solid #e8eaed;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;padding:.12em .55em;border-radius:.3em;white-space:nowrap}
.s-alarm{background:#d32f2f;color:#fff}.s-anomalous{background:#ffb74d}
.s-normal{background:#a5d6a7}.s-none{background:#e0e0e0;color:#444}
.ack-yes{color:#2e7d32;font-weight:600}.ack-no{color:#c62828;font-weight:600}
.range{display:flex;flex-wrap:wrap;align-items:center;gap:.5em}
.range a.preset{padding:.3em .8em;border:1px solid #90a4ae;border-radius:4px;color:#263238;
text-decoration:none;background:#fff}.range a.preset.active{background:#263238;color:#fff}
.range form{display:inline-flex;gap:.4em;align-items:center;margin-left:1em}
.legend{display:flex;flex-wrap:wrap;gap:1.2em;margin:.3em 0}.legend label{cursor:pointer}
.swatch{display:inline-block;width:1.6em;height:.35em;vertical-align:middle;margin-right:.3em}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.pair audio{width:100%;margin-top:.3em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1.2em;margin:0}
dl.facts dt{color:#555}dl.facts dd{margin:0}
form.ack textarea{width:100%;max-width:40em;height:3.2em;font:inherit}
form.ack button,.range button{font:inherit;padding:.25em .9em}
.crumbs{margin:.6em 0}.warn{color:#b71c1c}code{font-size:.92em}
"""

SCRIPT = """
(function(){
  for (const cb of document.querySelectorAll('input[data-series-toggle]')) {
    cb.addEventListener('change', function(){
      for (const g of document.querySelectorAll('g.series')) {
        if (g.dataset.series === cb.value) g.style.display = cb.checked ? '' : 'none';
      }
    });
  }
  for (const form of document.querySelectorAll('form.ack')) {
    form.addEventListener('submit', async function(ev){
      ev.preventDefault();
      const out = form.querySelector('.ack-result');
      out.textContent = 'saving…';
      try {
        const r = await fetch(form.dataset.url, {method: 'POST',
          headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({note: form.elements.note.value})});
        if (!r.ok) {
          let msg = 'HTTP ' + r.status;
          try { msg = (await r.json()).error || msg; } catch (e) {}
          out.textContent = 'not saved: ' + msg;
          return;
        }
        out.textContent = 'acknowledged';
        document.body.dataset.acked = form.dataset.alarm;
        location.reload();
      } catch (e) { out.textContent = 'not saved: ' + e; }
    });
  }
  const every = Number(document.body.dataset.refresh || 0);
  if (every > 0) setInterval(function(){
    const el = document.activeElement;
    const typing = el && ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName);
    const playing = Array.from(document.querySelectorAll('audio')).some(a => !a.paused);
    if (!typing && !playing && !document.hidden) location.reload();
  }, every * 1000);
})();
"""
