// Progress that survives a page reload (A1111's javascript/progressbar.js + ui.js restoreProgressTxt2img/Img2img):
// while a job runs, its task id (on the progress bar, data-task-id) is kept in localStorage["<tab>_task_id"]; when
// the page loads with one there, the tab's hidden "Restore progress" button follows that task on the server, which
// shows its progress and then its result. The id is forgotten when the result is shown (the Generate and Restore
// events' .then).
(function () {
    const tabs = ["txt2img", "img2img"];

    function watch(tab) {
        const holder = document.getElementById(tab + "_progress");
        if (!holder) return false;
        new MutationObserver(function () {
            const bar = holder.querySelector(".webui-progress[data-task-id]");
            if (bar) localStorage.setItem(tab + "_task_id", bar.dataset.taskId);
        }).observe(holder, {childList: true, subtree: true, attributes: true});
        return true;
    }

    function start() {
        const pending = new Set(tabs);
        const timer = setInterval(function () {
            for (const tab of Array.from(pending)) {
                const restore = document.getElementById(tab + "_restore_progress");
                if (!restore || !watch(tab)) continue;
                pending.delete(tab);
                if (localStorage.getItem(tab + "_task_id")) restore.click();
            }
            if (pending.size === 0) clearInterval(timer);
        }, 200);
        setTimeout(function () { clearInterval(timer); }, 60000);
    }

    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
})();
