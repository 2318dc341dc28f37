// Azure Managed Redis (Microsoft.Cache/redisEnterprise): TLS on port 10000, Microsoft Entra ID only
// (access keys disabled), reachable through a private endpoint in the private-endpoint subnet, whose
// NSG is where network faults are applied. The app identity gets the "default" access policy.

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Azure Managed Redis SKU.')
param skuName string = 'Balanced_B0'

@allowed([
  'Enabled'
  'Disabled'
])
@description('Replication of the data set.')
param highAvailability string = 'Disabled'

@description('Resource id of the subnet the private endpoint goes into.')
param privateEndpointSubnetId string

@description('Resource id of the privatelink.redis.azure.net private DNS zone.')
param privateDnsZoneId string

@description('Object id of the identity that connects to Redis (its Redis username).')
param appPrincipalId string

// The port the service and the NSG fault rules expect (REDIS_PORT, AZURE_NSG_RULE_PORT).
var redisPort = 10000

resource cluster 'Microsoft.Cache/redisEnterprise@2025-04-01' = {
  name: 'redis-${resourceToken}'
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-04-01' = {
  parent: cluster
  // Azure Managed Redis has exactly one database and it must be called "default".
  name: 'default'
  properties: {
    port: redisPort
    clientProtocol: 'Encrypted'
    // EnterpriseCluster: one endpoint, so a non-cluster-aware client works unchanged.
    clusteringPolicy: 'EnterpriseCluster'
    evictionPolicy: 'VolatileLRU'
    accessKeysAuthentication: 'Disabled'
  }
}

resource appAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-04-01' = {
  parent: database
  name: 'chaoslabapp'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: appPrincipalId
    }
  }
}

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-${cluster.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'redis'
        properties: {
          privateLinkServiceId: cluster.id
          groupIds: [
            'redisEnterprise'
          ]
        }
      }
    ]
  }
}

resource privateDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'privatelink-redis-azure-net'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

output name string = cluster.name
output hostName string = cluster.properties.hostName
output port int = redisPort
output accessPolicyAssignmentId string = appAccess.id
