--[[
  The request budget shared by every replica on the prefix: takes up to `want` permits, and
  folds in what the calling replica saw since its last call, all in one round trip.

  The bucket is GCRA: `tat` is the theoretical arrival time of the next permit. A permit is
  granted while tat - now <= (burst - 1) * T, with T = 1000 / rate ms; granting n permits moves
  tat on by n * T. So over any interval d at most burst + rate * d permits become usable,
  whichever replica asks. A caller may also reserve permits up to `reserveMs` ahead: they are
  granted now but usable only from `readyAt`, when the last of them conforms. One call then
  covers a whole batch even while replicas compete for every permit.

  The shared rate in force is, in this order: the rate the API's rate-limit headers named
  (capped at the limit), else the adapted rate (AIMD, capped at the limit), else the limit,
  else none (every permit is granted; the pause still holds).

  AIMD: the first 429 of a burst cuts the rate to BETA times the rate in force (with none in
  force yet, or one far above what got through, BETA times the rate of answers that did get
  through, provided at least MIN_EVIDENCE requests were sent or answered in the last second:
  below that a 429 pauses but sets no rate from the trickle); later 429s of the same burst
  (until `guard`) cut nothing. "Sent" counts the requests the replicas report they sent, not
  the permits granted: with no rate in force a call grants a whole batch, most of which may lapse
  unspent. While answers arrive without 429 and demand exceeds the rate (a take fell short
  within STARVED_MS), the rate grows by ALPHA * base per second, `base` being the rate set at
  the last cut, and by at least MIN_STEP per second: a straight line, so the rate spends most of
  its time just under the rate the API accepts, and a low rate does not take minutes to recover.

  A 429 (or a header saying nothing remains) sets `pause`: until then no replica gets a permit.

  Replicas' clocks must agree (as leases already need): `now` comes from the caller. So that a
  replica with a clock far ahead cannot jam the others, tat is never further ahead of the
  caller's `now` than one full bucket (plus the longest reservation), and a pause never longer
  than MAX_PAUSE_MS.

  KEYS[1] budget  hash: tat, rate, base, pause, guard, grow, short, w, wok, wsent, pok, psent

  ARGV[1] now (ms)
  ARGV[2] want: permits to take; 0 only reports
  ARGV[3] limit: POLLER_RATE_LIMIT in requests/s; 0 = no fixed limit
  ARGV[4] burst: POLLER_RATE_BURST, >= 1 (with no limit: at least one second of the rate)
  ARGV[5] ok: answers without 429 since the caller's last report
  ARGV[6] throttled: 1 if a 429 came back since the last report, else 0
  ARGV[7] pauseMs: pause asked for (Retry-After, or until a header's reset); 0 for none
  ARGV[8] headerRate: requests/s named by rate-limit headers; 0 for none
  ARGV[9] ttlMs: the budget's state is forgotten after this long without a call
  ARGV[10] reserveMs: how far beyond the bucket permits may be reserved; 0 for none
  ARGV[11] sent: requests the caller sent since its last report

  Returns { granted, waitMs, rateMilli, pauseUntil, readyAt }
    granted     permits granted (0..want)
    waitMs      when granted < want: ms until a whole `want` could be granted, `want` counted at
                no more than the bucket and the reservation hold at the rate in force (a batch
                sized for a rate since cut would otherwise wait for ever); or until the pause ends
    rateMilli   the shared rate in force, in thousandths of a request/s; -1 for none
    pauseUntil  end of the shared pause (ms), 0 for none
    readyAt     when the granted permits may be used (ms); now unless some were reserved
]]
local rcall = redis.call
local key = KEYS[1]

local BETA = 0.8
local ALPHA = 0.02
local MIN_STEP = 1
local MIN_RATE = 0.1
local GUARD_MS = 1000
local STARVED_MS = 1000
local WINDOW_MS = 1000
local MAX_PAUSE_MS = 3600000
local MAX_RESERVE_MS = 1000
-- Requests sent (or answered) in the last second across the replicas, below which a 429 sets
-- no rate from them.
local MIN_EVIDENCE = 20

local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local ok = tonumber(ARGV[5])
local throttled = ARGV[6] == "1"
local pauseMs = tonumber(ARGV[7])
local headerRate = tonumber(ARGV[8])
local reserve = math.min(tonumber(ARGV[10]), MAX_RESERVE_MS)
local sent = tonumber(ARGV[11])

local f = rcall("HMGET", key, "tat", "rate", "base", "pause", "guard", "grow", "short",
  "w", "wok", "wsent", "pok", "psent")
local tat = tonumber(f[1]) or 0
local rate = tonumber(f[2])
local base = tonumber(f[3]) or rate
local pause = tonumber(f[4]) or 0
local guard = tonumber(f[5]) or 0
local grow = tonumber(f[6]) or now
local short = tonumber(f[7]) or 0
local w = tonumber(f[8]) or now
local wok = (tonumber(f[9]) or 0) + ok
local wsent = (tonumber(f[10]) or 0) + sent
local pok = tonumber(f[11])
local psent = tonumber(f[12])

-- What got through and what was sent, per second, over the last full window: the yardstick of
-- a first cut. A window older than two is stale (the replicas were idle).
if now - w >= WINDOW_MS then
  if now - w < 2 * WINDOW_MS then
    pok = wok * 1000 / (now - w)
    psent = wsent * 1000 / (now - w)
  else
    pok, psent = nil, nil
  end
  w, wok, wsent = now, 0, 0
end

local function capped(r)
  if limit > 0 and r > limit then return limit end
  return r
end

if headerRate > 0 then
  rate = capped(headerRate)
  base = rate
elseif throttled and now >= guard then
  local span = math.max(now - w, 100)
  local through = pok or (wok * 1000 / span)
  local sentRate = psent or (wsent * 1000 / span)
  -- What got through is the API's measure only when the replicas sent enough to meet a limit.
  -- A 429 among a handful of requests (a quiet daemon, a stray 429) names no rate: cutting to
  -- that trickle would starve the daemon's own demand and recover at a trickle's pace.
  -- Counted, not extrapolated: a window only just begun would turn three answers into 30/s.
  local loaded = math.max(psent or wsent, pok or wok) >= MIN_EVIDENCE
  local from = rate
  if from == nil and limit > 0 then from = limit end
  if loaded and through > 0 and (from == nil or from > 2 * through) then from = through end
  if from == nil and loaded then from = sentRate end
  if from ~= nil then
    rate = math.max(MIN_RATE, capped(from) * BETA)
    base = rate
  end
  guard = now + math.min(pauseMs, MAX_PAUSE_MS) + GUARD_MS
  grow = now
elseif ok > 0 and not throttled and rate ~= nil and now >= guard then
  if now - short < STARVED_MS then
    local step = math.max(ALPHA * (base or rate), MIN_STEP)
    rate = capped(rate + step * math.min(now - grow, 1000) / 1000)
  end
  grow = now
end

if pauseMs > 0 then pause = math.max(pause, now + math.min(pauseMs, MAX_PAUSE_MS)) end
if pause > now + MAX_PAUSE_MS then pause = now + MAX_PAUSE_MS end

local eff = rate
if eff == nil and limit > 0 then eff = limit end

local granted, waitMs, readyAt = 0, 0, now
if now < pause then
  if want > 0 then waitMs = pause - now end
elseif want > 0 then
  if eff == nil then
    granted = want
  else
    local T = 1000 / eff
    local b = burst
    if limit == 0 and eff > b then b = eff end
    -- Reservations reach at most MAX_RESERVE_MS beyond the bucket; anything further came from
    -- a clock far ahead.
    if tat > now + b * T + MAX_RESERVE_MS then tat = now + b * T + MAX_RESERVE_MS end
    local start = math.max(tat, now)
    local room = math.floor((now + reserve + b * T - start) / T + 1e-9)
    granted = math.max(0, math.min(want, room))
    tat = start + granted * T
    -- The last permit granted conforms once tat - now <= b * T.
    readyAt = math.max(now, math.ceil(tat - b * T))
    if granted < want then
      short = now
      -- Until a whole batch fits again: asking sooner would be a round trip for a few.
      local batch = math.min(want, math.max(1, math.floor(b + reserve / T + 1e-9)))
      waitMs = math.max(1, math.ceil(tat + batch * T - b * T - reserve - now))
    elseif tat - now > b * T then
      -- Demand met only by reserving beyond the bucket: the rate is what limits.
      short = now
    end
  end
end

local fields = { "tat", string.format("%.3f", tat), "pause", string.format("%d", pause),
  "guard", string.format("%d", guard), "grow", string.format("%d", grow),
  "short", string.format("%d", short), "w", string.format("%d", w),
  "wok", string.format("%d", wok), "wsent", string.format("%d", wsent) }
if rate ~= nil then
  fields[#fields + 1] = "rate"
  fields[#fields + 1] = string.format("%.6f", rate)
  fields[#fields + 1] = "base"
  fields[#fields + 1] = string.format("%.6f", base or rate)
end
if pok ~= nil then
  fields[#fields + 1] = "pok"
  fields[#fields + 1] = string.format("%.3f", pok)
  fields[#fields + 1] = "psent"
  fields[#fields + 1] = string.format("%.3f", psent)
elseif f[11] then
  rcall("HDEL", key, "pok", "psent")
end
rcall("HSET", key, unpack(fields))
rcall("PEXPIRE", key, ARGV[9])

local rateMilli = -1
if eff ~= nil then rateMilli = math.floor(eff * 1000 + 0.5) end
return { granted, waitMs, rateMilli, pause, readyAt }
