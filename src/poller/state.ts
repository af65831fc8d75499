// The job state and its codec live on the store side (the stored layout is the store's
// business); the poller's rules use the type and the fresh state from here.
export {
  decodeState,
  encodeState,
  initialState,
  type JobState,
  StateDecodeError,
} from "../store/state.js";
