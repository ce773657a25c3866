import t from 'tap'
import { memoryBroker } from '../lib/broker/memory.js'
import { brokerContract } from './helpers/broker-contract.js'

brokerContract(t, 'memoryBroker', async ({ replay }) => memoryBroker(replay === undefined ? {} : { replay }), {
  shared: false
})
