// Node 20 lacks Promise.withResolvers (added in Node 22), which js-ipfs 0.66's dependencies call.
// Loaded into jsipfs with NODE_OPTIONS="--require <this file>"; does nothing where the function exists.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((resolveFunction, rejectFunction) => {
      resolve = resolveFunction
      reject = rejectFunction
    })
    return { promise, resolve, reject }
  }
}
