// Osprey's web UI: live updates over Server-Sent Events, folding of log
// sections, earlier parts of long logs on demand. Plain JavaScript, no
// framework, nothing fetched from elsewhere.
(function () {
  'use strict';
  // Set once per page load: a page that updated without a reload keeps it.
  window.ospreyLoadedAt = Date.now();

  var FINAL = ['success', 'failed', 'canceled', 'skipped'];

  function setStatus(el, status) {
    if (el && el.getAttribute('data-status') !== status) el.setAttribute('data-status', status);
  }
  function setText(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }
  function badge(el, status) {
    setStatus(el, status);
    setText(el, status);
  }

  // ---- The pipeline page: statuses, durations and agents as they change.
  var pipeline = document.getElementById('pipeline');
  if (pipeline && FINAL.indexOf(pipeline.getAttribute('data-status')) < 0) {
    var pipelineEvents = new EventSource('/pipelines/' + pipeline.getAttribute('data-id') + '/events');
    pipelineEvents.addEventListener('pipeline', function (event) {
      var state = JSON.parse(event.data);
      setStatus(pipeline, state.status);
      badge(document.getElementById('pipeline-status'), state.status);
      setText(document.getElementById('pipeline-duration'), state.duration);
      state.jobs.forEach(function (job) {
        var box = document.getElementById('job-' + job.id);
        if (box) {
          setStatus(box, job.status);
          var detail = [job.duration, job.agent].filter(Boolean).join(' · ');
          setText(box.querySelector('text.detail'), detail);
          var title = box.querySelector('title');
          if (title) setText(title, box.querySelector('text.name').textContent + ': ' + job.status);
        }
        var row = document.querySelector('tr.job[data-job="' + job.id + '"]');
        if (row) {
          setStatus(row, job.status);
          badge(row.querySelector('.status .badge'), job.status);
          setText(row.querySelector('.duration'), job.duration);
          setText(row.querySelector('.agent'), job.agent || '');
          setText(row.querySelector('.reason'), job.failure_reason || job.pending_reason || '');
        }
      });
    });
    pipelineEvents.addEventListener('eof', function () { pipelineEvents.close(); });
  }

  // ---- The job page.
  var job = document.getElementById('job');
  var log = document.getElementById('log');
  if (!job || !log) return;
  var jobId = job.getAttribute('data-id');

  // Sections: a header folds the lines up to its section's end. `stack`
  // holds the sections open at the log's end, for lines that arrive live.
  var stack = [];
  function hiddenBy(open) {
    return open.some(function (header) { return header.classList.contains('folded'); });
  }
  function place(line, open) {
    var name = line.getAttribute('data-e');
    var hide = hiddenBy(open);
    if (line.classList.contains('sh')) {
      line.classList.toggle('hidden', hide);
      open.push(line);
      return;
    }
    line.classList.toggle('hidden', hide);
    if (name !== null) {
      for (var i = open.length - 1; i >= 0; i--) {
        if (open[i].getAttribute('data-s') === name) { open.length = i; break; }
      }
    }
  }
  function refold() {
    var open = [];
    var lines = log.children;
    for (var i = 0; i < lines.length; i++) place(lines[i], open);
    stack = open;
  }
  Array.prototype.forEach.call(log.querySelectorAll('.l.sh[data-c="1"]'), function (header) {
    header.classList.add('folded');
  });
  refold();
  log.addEventListener('click', function (event) {
    if (event.target.closest('a')) return;
    var header = event.target.closest('.l.sh');
    if (!header) return;
    header.classList.toggle('folded');
    refold();
  });

  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
  }
  function append(html) {
    var follow = atBottom();
    var holder = document.createElement('div');
    holder.innerHTML = html;
    while (holder.firstChild) {
      var line = holder.firstChild;
      log.appendChild(line);
      if (line.nodeType === 1) place(line, stack);
    }
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  if (job.getAttribute('data-finished') !== 'true') {
    var from = job.getAttribute('data-stream-from');
    var logEvents = new EventSource('/jobs/' + jobId + '/log/events?offset=' + from);
    logEvents.addEventListener('lines', function (event) { append(event.data); });
    logEvents.addEventListener('status', function (event) {
      var state = JSON.parse(event.data);
      setStatus(job, state.status);
      badge(document.getElementById('job-status'), state.status);
      setText(document.getElementById('job-duration'), state.duration);
      setText(document.getElementById('job-agent'), state.agent || '');
      setText(document.getElementById('job-reason'), state.failure_reason || state.pending_reason || '');
    });
    logEvents.addEventListener('eof', function () {
      logEvents.close();
      job.setAttribute('data-finished', 'true');
    });
  }

  // Earlier lines of a long log, a window at a time.
  var earlier = document.getElementById('log-earlier');
  function loadEarlier() {
    var before = earlier.getAttribute('data-before');
    return fetch('/jobs/' + jobId + '/log.html?before=' + before, { credentials: 'same-origin' })
      .then(function (response) {
        if (!response.ok) throw new Error('loading earlier lines: ' + response.status);
        var start = response.headers.get('X-Log-Start');
        return response.text().then(function (html) {
          log.insertAdjacentHTML('afterbegin', html);
          earlier.setAttribute('data-before', start);
          if (start === '0') {
            earlier.remove();
            earlier = null;
            log.classList.remove('partial');
          }
          refold();
        });
      });
  }
  if (earlier) {
    earlier.addEventListener('click', function () { loadEarlier(); });
  }

  // A link to a line not loaded yet loads earlier windows until it is.
  var wanted = /^#o(\d+)$/.exec(window.location.hash);
  if (wanted && !document.getElementById('o' + wanted[1])) {
    var target = Number(wanted[1]);
    var step = function () {
      var line = document.getElementById('o' + target);
      if (line) { line.classList.add('target'); line.scrollIntoView(); return; }
      if (earlier && Number(earlier.getAttribute('data-before')) > target) loadEarlier().then(step);
    };
    step();
  }
})();
