--[[
  Finds members of the pending set that the poller does not track yet and schedules them.

  First the intake hint: ids that `track()` added to the pending set, popped from a list in
  O(batch). A hinted id is scheduled only while it is pending and not yet tracked, so a hint
  that is stale (the job already done with), repeated, or raced by the diff or another replica
  schedules nothing twice. Ids that are not job ids are left to the diff, which rejects them.

  The pending set is the producers' and may be large, so its diff against `tracked` is
  computed only when their sizes differ (O(1) otherwise) or when the caller forces a
  reconciliation; the diff is parked in a scratch set and handed out in batches so one call
  never returns an unbounded reply.

  Invariant: every member of `tracked` is (or was, until a producer removed it) in `pending`;
  a member leaves `pending` only through applyDecisions (final) or rejectMember.

  KEYS[1] pending    set, written by producers
  KEYS[2] tracked    set, the pending members already scheduled (as written)
  KEYS[3] schedule   zset, job id (lowercase) -> due time in ms; 0 = never polled
  KEYS[4] aliases    hash, job id -> the spellings of it that are not lowercase, comma-separated
  KEYS[5] scratch    set, new members waiting to be handed out
  KEYS[6] rejectSeq  hash, rejected member -> last event sequence
  KEYS[7] expiry     zset, job id -> when its recorded state may be dropped
  KEYS[8] hints      list, ids added by track(), oldest first

  ARGV[1] batch size
  ARGV[2] "1" to force a full reconciliation
  ARGV[3] "1" if a diff may be computed now ("0": only hand out what the scratch set holds;
          the caller spaces the O(N) diffs out so they stay a small share of Redis time)
  ARGV[4] expireAt (ms) for the state of a job a producer removed

  Returns { added, { member, lastRejectSequence, ... }, remaining (scratch + hints), untracked,
            diffed (0/1) }
]]
local rcall = redis.call
local pending, tracked, schedule, aliases, scratch, rejectSeq, expiry, hints =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local limit = tonumber(ARGV[1])
local force = ARGV[2] == "1"
local mayDiff = ARGV[3] == "1" or force

local uuid = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local function isJobId(m)
  return #m == 36 and string.match(m, uuid) ~= nil
end

-- Schedules a pending job-id member; returns 1 if its job was not scheduled before.
local function track(m)
  local id = string.lower(m)
  rcall("SADD", tracked, m)
  if m ~= id then
    -- Every spelling is kept (a UUID has no comma), so all of them leave pending at the end.
    local known = rcall("HGET", aliases, id)
    if not known then
      rcall("HSET", aliases, id, m)
    elseif not string.find("," .. known .. ",", "," .. m .. ",", 1, true) then
      rcall("HSET", aliases, id, known .. "," .. m)
    end
  end
  return rcall("ZADD", schedule, "NX", 0, id)
end

local added = 0
local hinted = rcall("LPOP", hints, limit)
if hinted then
  for _, m in ipairs(hinted) do
    if isJobId(m) and rcall("SISMEMBER", tracked, m) == 0 and rcall("SISMEMBER", pending, m) == 1 then
      added = added + track(m)
    end
  end
end
local hintsLeft = rcall("LLEN", hints)

local untracked = 0
local diffed = 0
if rcall("SCARD", scratch) == 0 then
  local np = rcall("SCARD", pending)
  local nt = rcall("SCARD", tracked)
  if (np == nt and not force) or not mayDiff then
    return { added, {}, hintsLeft, 0, 0 }
  end
  diffed = 1
  if np < nt or force then
    -- A producer removed members it had added: stop polling them.
    local gone = rcall("SDIFF", tracked, pending)
    for _, m in ipairs(gone) do
      rcall("SREM", tracked, m)
      local id = string.lower(m)
      -- The job stays scheduled while any other spelling of it is still tracked.
      local still = rcall("SISMEMBER", tracked, id) == 1
      local kept = {}
      for spelling in string.gmatch(rcall("HGET", aliases, id) or "", "[^,]+") do
        if spelling ~= m and rcall("SISMEMBER", tracked, spelling) == 1 then
          kept[#kept + 1] = spelling
          still = true
        end
      end
      if #kept > 0 then
        rcall("HSET", aliases, id, table.concat(kept, ","))
      else
        rcall("HDEL", aliases, id)
      end
      if not still then
        rcall("ZREM", schedule, id)
        -- Its recorded state is dropped after the TTL like a finished job's, not kept forever.
        rcall("ZADD", expiry, ARGV[4], id)
      end
      untracked = untracked + 1
    end
  end
  if rcall("SDIFFSTORE", scratch, pending, tracked) == 0 then
    return { added, {}, hintsLeft, untracked, diffed }
  end
end

local batch = rcall("SPOP", scratch, limit)
local invalid = {}
for _, m in ipairs(batch) do
  -- The scratch copy may be older than a removal; only members still pending count.
  if rcall("SISMEMBER", pending, m) == 1 then
    if isJobId(m) then
      added = added + track(m)
    else
      invalid[#invalid + 1] = m
      invalid[#invalid + 1] = tonumber(rcall("HGET", rejectSeq, m) or "0")
    end
  end
end
return { added, invalid, rcall("SCARD", scratch) + hintsLeft, untracked, diffed }
