import NIOCore

/// Runs a task's jobs on one event loop, in the order they are enqueued. Backend calls run
/// on their connection's loop so that calls started in request order also reach the bus
/// in that order, however many loops the worker has.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
