// livecast player: waits for the room to go live, plays it with hls.js in
// low-latency mode, and starts over by itself when the stream ends or the
// publisher reconnects.
(function () {
  "use strict";
  const room = document.body.dataset.room;
  const src = "/live/" + encodeURIComponent(room) + "/master.m3u8";
  const video = document.getElementById("video");
  const badge = document.getElementById("state");
  const player = { hls: null, state: "offline", restarts: 0 };
  window.livecastPlayer = player;

  function setState(state) {
    player.state = state;
    badge.textContent = state;
    badge.className = state;
  }

  async function isLive() {
    try {
      const response = await fetch(src, { method: "HEAD", cache: "no-store" });
      return response.ok;
    } catch (e) {
      return false;
    }
  }

  function stop() {
    if (player.hls) { player.hls.destroy(); player.hls = null; }
  }

  async function waitAndPlay() {
    stop();
    while (!(await isLive())) {
      setState("offline");
      await new Promise((r) => setTimeout(r, 2000));
    }
    play();
  }

  function play() {
    setState("live");
    if (!window.Hls || !Hls.isSupported()) {
      video.src = src; // Safari plays LL-HLS natively
      return;
    }
    const hls = new Hls({
      lowLatencyMode: true,
      backBufferLength: 30,
      maxLiveSyncPlaybackRate: 1.5,
      liveSyncOnStallIncrease: 0.25,
    });
    player.hls = hls;
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && player.restarts % 2 === 0) {
        player.restarts++;
        hls.recoverMediaError();
        return;
      }
      player.restarts++;
      waitAndPlay();
    });
    hls.on(Hls.Events.LEVEL_UPDATED, (event, data) => {
      // EXT-X-ENDLIST: the broadcast is over; wait for the next one.
      if (!data.details.live) {
        setTimeout(() => { if (player.hls === hls) waitAndPlay(); }, 1000);
      }
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    video.play().catch(() => {});
  }

  waitAndPlay();
})();
